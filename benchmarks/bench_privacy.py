"""Privacy: precision and recall per entity type, false positives on real rows, Spark throughput.

1. **Labeled set**: real instructions from ../shared/data, each with one planted value in a
   sentence from a template (inserted before, after, or into the row's input): emails, phones
   (Faker, the locales of privacy.phone_regions; numbers that `phonenumbers` says are not
   assigned in their region are left out and counted), credit cards (Faker, Luhn-valid), IBANs
   (Faker, valid mod-97), IPv4/IPv6, URLs, and secrets generated here in their real formats (AWS
   key ids, GitHub/Slack/Stripe/OpenAI/Hugging Face/npm tokens, JWTs, private-key blocks, URL
   passwords, assigned API keys).  A planted value is *found* when every one of its characters is
   inside a finding of its type; a finding inside the planted sentence is *correct* when it
   overlaps a planted value of its type.  Findings in the real row's own text are not counted
   here: they are the false-positive figure below.
2. **False positives on real rows**: every finding per type on the unmodified rows (which hold
   no planted data), as the share of rows with one.
3. **Spark throughput**: the dedup stage on N real rows with ``privacy.mode: off`` and ``mask``,
   same machine, same session: the added seconds, rows/s per core of the masking, and its share
   of the dedup stage's time, at two sizes.

    python benchmarks/bench_privacy.py [--labeled 3500] [--real 20000] [--sizes 20000,60000] [--seed 7]
    python benchmarks/bench_privacy.py --checks 5000 [--data FILE.jsonl]   # the cheap checks' gain

Prints one JSON object.  Run it through /work/heavy (it starts Spark).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import load_records  # noqa: E402

TEMPLATES = {
    "EMAIL": ["Contact me at {v} if anything changes.", "My email is {v}", "Send the draft to {v} before noon.",
              "(reply-to: {v})", "Forwarded by {v}:"],
    "PHONE": ["Call me on {v} tomorrow.", "My number is {v}.", "Phone: {v}", "You can reach the office at {v} "
              "between 9 and 5.", "Text {v} when you arrive."],
    "CREDIT_CARD": ["Please charge my card {v} for the order.", "Card number: {v}", "I paid with {v} but got no "
                    "receipt.", "use {v} exp 04/29"],
    "IBAN": ["Transfer the money to {v} by Friday.", "IBAN: {v}", "My account is {v}, please refund it.",
             "Beneficiary account {v}"],
    "IP": ["The server at {v} is not responding.", "Requests come from {v} every minute.", "ssh admin@{v} fails",
           "Whitelist {v} in the firewall."],
    "URL": ["See {v} for my profile.", "The document is at {v}", "Open {v} and tell me what you see.",
            "Link: {v}"],
    "SECRET": ["Here is my key {v}, why does it fail?", "export TOKEN={v}", "config: {v}", "I pasted {v} "
               "into the settings but it is rejected.", "Authorization header: {v}"],
}
LOCALES = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "en_IN": "IN"}
ALNUM = string.ascii_letters + string.digits


def _tok(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def make_secret(rng: random.Random) -> str:
    kind = rng.randrange(11)
    if kind == 0:
        return "AKIA" + _tok(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
    if kind == 1:
        return rng.choice(["ghp_", "gho_", "ghs_"]) + _tok(rng, ALNUM, 36)
    if kind == 2:
        return "xoxb-" + _tok(rng, string.digits, 12) + "-" + _tok(rng, string.digits, 13) + "-" + _tok(rng, ALNUM, 24)
    if kind == 3:
        return rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + _tok(rng, ALNUM, rng.choice([24, 34, 99]))
    if kind == 4:
        return "sk-proj-" + _tok(rng, ALNUM + "_-", 58) + "T3BlbkFJ" + _tok(rng, ALNUM + "_-", 58)
    if kind == 5:
        return "hf_" + _tok(rng, string.ascii_letters, 34)
    if kind == 6:
        return "npm_" + _tok(rng, ALNUM, 36)
    if kind == 7:
        head = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
        body = json.dumps({"sub": str(rng.randrange(10**9)), "name": "x", "iat": 1700000000}).encode()
        import base64

        b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
        return f"{b64(head)}.{b64(body)}.{_tok(rng, ALNUM + '_-', 43)}"
    if kind == 8:
        lines = "\n".join(_tok(rng, ALNUM + "+/", 64) for _ in range(rng.randrange(3, 8)))
        label = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
        return f"-----BEGIN {label}PRIVATE KEY-----\n{lines}\n-----END {label}PRIVATE KEY-----"
    if kind == 9:
        return (f"{rng.choice(['https', 'postgres', 'mysql', 'redis'])}://{_tok(rng, string.ascii_lowercase, 6)}:"
                f"{_tok(rng, ALNUM + '!#$%', 12)}@{_tok(rng, string.ascii_lowercase, 8)}.example.com:5432/db")
    return f'api_key = "{_tok(rng, ALNUM, 32)}"'


def make_value(kind: str, rng: random.Random, fakers: dict, dropped: Counter) -> str:
    import phonenumbers

    # Faker's en_IN IBANs are one character short of a GB IBAN: not IBANs, left out
    loc = rng.choice([lo for lo in fakers if not (kind == "IBAN" and lo == "en_IN")])
    f = fakers[loc]
    if kind == "EMAIL":
        return f.email() if rng.random() < 0.7 else f"{f.first_name()}.{f.last_name()}@{f.domain_name()}".lower()
    if kind == "PHONE":
        while True:
            v = f.phone_number()
            try:
                ok = phonenumbers.is_valid_number(phonenumbers.parse(v, LOCALES[loc]))
            except phonenumbers.NumberParseException:
                ok = False
            if ok:
                return v
            dropped["PHONE"] += 1
    if kind == "CREDIT_CARD":
        v = f.credit_card_number()
        if rng.random() < 0.5 and len(v) == 16:
            v = " ".join(v[i:i + 4] for i in range(0, 16, 4))
        return v
    if kind == "IBAN":
        v = f.iban()
        if rng.random() < 0.5:
            v = " ".join(v[i:i + 4] for i in range(0, len(v), 4))
        return v
    if kind == "IP":
        return f.ipv4() if rng.random() < 0.7 else f.ipv6()
    if kind == "URL":
        return f.url() + rng.choice(["", "users/" + f.user_name(), "login?next=/home", "doc/" + str(rng.randrange(999))])
    return make_secret(rng)


def labeled_set(n: int, rows: list[dict], seed: int = 0):
    from faker import Faker

    rng = random.Random(seed)
    fakers = {}
    for loc in LOCALES:
        fakers[loc] = Faker(loc)
        fakers[loc].seed_instance(seed)
    dropped: Counter = Counter()
    kinds = list(TEMPLATES)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        value = make_value(kind, rng, fakers, dropped)
        sentence = rng.choice(TEMPLATES[kind]).replace("{v}", value)
        row = rows[rng.randrange(len(rows))]
        where = rng.choice(["before", "after", "input"])
        field = "input" if where == "input" else "instruction"
        base = row[field]
        if where == "before":
            text, at = sentence + " " + base, 0
        else:
            text, at = (base + "\n" if base else "") + sentence, (len(base) + 1 if base else 0)
        secret = value
        if value.startswith('api_key = "'):  # the assigned value is the secret, not its name
            secret = value[len('api_key = "'):-1]
        vstart = at + sentence.index(secret)
        out.append({"kind": kind, "text": text, "value": (vstart, vstart + len(secret)),
                    "sentence": (at, at + len(sentence)), "base": base})
    return out, dropped


def score(red, items) -> dict:
    by = defaultdict(lambda: Counter())
    for it in items:
        spans = red.detector.find(it["text"])
        vs, ve = it["value"]
        kind = it["kind"]
        covered = all(any(s.start <= c < s.end and s.type == kind for s in spans) for c in range(vs, ve))
        by[kind]["planted"] += 1
        by[kind]["found"] += covered
        ss, se = it["sentence"]
        for s in spans:
            if s.end <= ss or s.start >= se:
                continue  # in the real row's own text: the false-positive figure
            correct = s.type == kind and s.start < ve and s.end > vs
            by[s.type]["predicted"] += 1
            by[s.type]["correct"] += correct
    out = {}
    for kind in TEMPLATES:
        c = by[kind]
        out[kind] = {"planted": c["planted"], "recall": round(c["found"] / c["planted"], 4) if c["planted"] else None,
                     "findings": c["predicted"],
                     "precision": round(c["correct"] / c["predicted"], 4) if c["predicted"] else None}
    return out


def false_positives(red, rows: list[dict]) -> dict:
    per_type, examples = Counter(), defaultdict(list)
    rows_any = 0
    t0 = time.perf_counter()
    for r in rows:
        kinds = set()
        for field in ("instruction", "input"):
            text = r[field]
            for s in red.detector.find(text):
                kinds.add(s.type)
                if len(examples[s.type]) < 4:
                    examples[s.type].append(text[max(0, s.start - 20):s.end + 20])
        rows_any += bool(kinds)
        per_type.update(kinds)
    seconds = time.perf_counter() - t0
    return {"rows": len(rows), "rows_with_any_finding": rows_any, "rate_any": round(rows_any / len(rows), 5),
            "rows_per_type": dict(per_type), "rate_per_type": {k: round(v / len(rows), 5) for k, v in per_type.items()},
            "examples": dict(examples), "rows_per_second_one_core": round(len(rows) / seconds, 1)}


def spark_throughput(sizes: list[int], records: list[dict]) -> list[dict]:
    """The dedup stage with privacy off and on, each size; a small masked run first, so every
    Python worker has built its engine (a one-time cost per worker, reported apart)."""
    from selectllm import pipeline
    from selectllm.config import load_config
    from selectllm.dedup.stage import STAGE
    from selectllm.rundir import RunDir

    out = []
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        def dedup(path: Path, mode: str, tag: str) -> float:
            cfg = load_config(None, [f"input.paths=[{path}]", f"privacy.mode={mode}", f"run_dir={tmp}/run-{tag}"])
            t0 = time.perf_counter()
            pipeline.run_stage(cfg, RunDir(cfg.run_dir), STAGE)
            return round(time.perf_counter() - t0, 2)

        def write(n: int) -> Path:
            path = Path(tmp) / f"rows-{n}.jsonl"
            with path.open("w") as f:
                for i in range(n):
                    r = records[i % len(records)]
                    rep = i // len(records)
                    f.write(json.dumps({"instruction": r["instruction"] + (f" (variant {rep})" if rep else ""),
                                        "input": r["input"]}) + "\n")
            return path

        warm = {"rows": 2000, "seconds_off": dedup(write(2000), "off", "warm-off"),
                "seconds_mask_first": dedup(write(2000), "mask", "warm-mask")}
        for n in sizes:
            path = write(n)
            res = {"rows": n, "seconds_off": dedup(path, "off", f"{n}-off"), "seconds_mask": dedup(path, "mask", f"{n}-mask")}
            added = res["seconds_mask"] - res["seconds_off"]
            res["added_seconds"] = round(added, 2)
            res["share_of_dedup"] = round(added / res["seconds_mask"], 3)
            splits = json.loads((Path(tmp) / f"run-{n}-mask" / "dedup" / "stats.json").read_text())["splits"]
            busy = min(cores, splits)  # reading tasks at once: a file under one split is read by one task
            res["mask_rows_per_s_per_core"] = round(n / added / busy, 1) if added > 0 else None
            res["cores"], res["splits"] = cores, splits
            out.append(res)
    return [{"warm_up": warm}, *out]


def per_detector(rows: list[dict]) -> dict:
    """Rows/s of one process with one entity type at a time (instruction and input masked)."""
    from selectllm.privacy.detect import ENTITIES
    from selectllm.privacy.redact import Redactor

    out = {}
    for kind in ENTITIES:
        red = Redactor([kind])
        red.mask_row({"instruction": "warm up"})
        t0 = time.perf_counter()
        for r in rows:
            red.mask_row({"instruction": r["instruction"], "input": r["input"]})
        out[kind] = round(len(rows) / (time.perf_counter() - t0), 1)
    return out


def checks_ab(rows: list[dict], rounds: int = 2) -> dict:
    """Rows/s of one process masking every entity type, with the cheap checks that skip a
    recognizer on a text that cannot hold its entity (``detect._may_hold``) and without them,
    alternately on the same rows; and whether the findings are the same."""
    from selectllm.privacy.detect import ENTITIES, Detector

    on, off = Detector(ENTITIES), Detector(ENTITIES)
    off._checks = {}
    texts = [t for r in rows for t in (r["instruction"], r["input"]) if t]
    seconds = {"with_checks": [], "without": []}
    found = {}
    for _ in range(rounds):
        for name, det in (("with_checks", on), ("without", off)):
            t0 = time.perf_counter()
            found[name] = [det.find(t) for t in texts]
            seconds[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in seconds.items()}
    runs = {k: sum(not c(t) for t in texts) for k, c in on._checks.items()}
    return {"rows": len(rows), "texts": len(texts),
            "rows_per_s": {k: round(len(rows) / v, 1) for k, v in best.items()},
            "speedup": round(best["without"] / best["with_checks"], 2),
            "same_findings": found["with_checks"] == found["without"],
            "texts_with_findings": sum(bool(f) for f in found["without"]),
            "recognizer_skipped_share": {k: round(v / len(texts), 3) for k, v in runs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labeled", type=int, default=3500)
    ap.add_argument("--real", type=int, default=20000)
    ap.add_argument("--sizes", default="20000,60000")
    ap.add_argument("--seed", type=int, default=7, help="the labeled set's draw (the detectors were tuned on seed 0)")
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--per-detector", action="store_true", help="only: rows/s of each entity type alone")
    ap.add_argument("--checks", type=int, default=0, metavar="ROWS",
                    help="only: rows/s with and without the cheap checks before each recognizer, on ROWS real rows")
    ap.add_argument("--data", default=None, help="--checks: a JSONL file to read the rows from instead")
    a = ap.parse_args()
    from selectllm.privacy.redact import redactor

    from selectllm.config import Config

    p = Config().privacy
    red = redactor(tuple(e.upper() for e in p.entities), tuple(p.phone_regions), p.timeout_s)
    if a.checks:
        if a.data:
            with open(a.data, encoding="utf-8") as f:
                rows = [json.loads(x) for _, x in zip(range(a.checks), f)]
            rows = [{"instruction": str(r.get("instruction") or ""), "input": str(r.get("input") or "")} for r in rows]
        else:
            rows = random.Random(1).sample(load_records(), a.checks)
        print(json.dumps({"source": a.data or "../shared/data", **checks_ab(rows)}, indent=2))
        return
    records = load_records()
    if a.per_detector:
        print(json.dumps({"rows": 3000, "rows_per_s_one_process": per_detector(load_records(limit=3000))}, indent=2))
        return
    rng = random.Random(1)
    real = rng.sample(records, min(a.real, len(records)))
    items, dropped = labeled_set(a.labeled, records, a.seed)
    result = {"labeled": score(red, items), "labeled_rows": len(items),
              "phones_left_out_not_assigned": dropped.get("PHONE", 0),
              "real_rows_false_positives": false_positives(red, real)}
    if not a.no_spark:
        result["spark"] = spark_throughput([int(s) for s in a.sizes.split(",")], records)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
