"""Which ``dedup.near.threshold``: recall of planted 1-3% word edits of real rows, and precision.  Prints JSON.

Corpus (seeded, built in memory, never written into the repository):

* ``--rows`` distinct real rows of ../shared/data, sampled: instruction + input in the id's normal
  form (:func:`~selectllm.text.minhash.shingle_text`: NFKC, casefolded, no punctuation, single
  spaces), distinct by that form;
* ``--planted`` copies, a third each with 1%, 2% and 3% of the words changed, of distinct sampled
  rows with 40 words or more: ``max(1, round(rate * words))`` edits at distinct word positions,
  each a substitution, an insertion or a deletion (uniform), new words drawn from the corpus
  vocabulary.  Each copy's true word-5-gram Jaccard to its original is computed on string shingle
  sets (no hashing).

For every threshold of ``--thresholds`` the project's near-dedup plan
(:func:`selectllm.dedup.near.find_near_duplicates`, the default bands for that threshold,
``verify`` on) runs on the same rows (``local[2]``), and the result is scored:

* ``recall[rate]``: share of the planted copies that end in the same component as their original
  (one of the two is removed): what near dedup is for.  ``ceiling[rate]``: share of the copies
  whose true Jaccard to their original is at least the threshold (the most any threshold-exact
  method can find; recall can exceed it through chains).
* ``pair_precision``: of the *reported pairs* (the verified edges of the similarity graph: every
  pair the plan declared similar), the share that are a planted (original, copy) pair or whose
  true word-5-gram Jaccard is at least the threshold.  (The plan checks candidates with the exact
  Jaccard of 32-bit-hashed shingles, so anything below 1 would be a hash collision or a bug.)
* ``removal_precision``: of the removed rows, the share whose true Jaccard to the row kept for
  them is at least the threshold, or that are a planted copy removed for its original (or the
  reverse).  Chains A~B~C (C removed for A) lower it.
* ``natural``: what the threshold does to the real data alone: reported pairs between two real
  rows (no planted row), by Jaccard band, and removed real rows by source file, with a few
  examples per band (what lowering the threshold adds).

Example (~5 minutes on 2 busy cores): ``python benchmarks/bench_near_threshold.py --rows 30000
--planted 3000 --out /tmp/near_threshold.json``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_near_dedup import dedup_table, run_ours  # noqa: E402

from selectllm.text.minhash import bands_rows, true_jaccard  # noqa: E402
from selectllm.text.normalize import content_id  # noqa: E402

RATES = (0.01, 0.02, 0.03)
MIN_WORDS = 40
BANDS = ((0.0, 0.7), (0.7, 0.72), (0.72, 0.75), (0.75, 0.8), (0.8, 0.9), (0.9, 1.0001))


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- corpus
def edit_words(rng: random.Random, words: list[str], rate: float, vocab: list[str]) -> list[str]:
    """``max(1, round(rate * len(words)))`` edits at distinct positions: substitution, insertion
    (a new word after the position) or deletion, each with probability 1/3."""
    k = max(1, round(rate * len(words)))
    kinds = {i: rng.randrange(3) for i in rng.sample(range(len(words)), k)}
    out: list[str] = []
    for i, w in enumerate(words):
        kind = kinds.get(i)
        if kind is None:
            out.append(w)
        elif kind == 0:
            out.append(rng.choice(vocab))
        elif kind == 1:
            out += [w, rng.choice(vocab)]
        # kind == 2: deleted
    return out


def build_corpus(rows: int, planted: int, seed: int = 11) -> dict:
    from _data import distinct_shingle_texts

    rng = random.Random(seed)
    texts, origin = distinct_shingle_texts()
    seen = set(texts)
    available = len(texts)
    keep = sorted(rng.sample(range(available), min(rows, available)))
    texts, origin = [texts[i] for i in keep], [origin[i] for i in keep]
    vocab = sorted({w for t in texts for w in t.split()})
    long_rows = [i for i, t in enumerate(texts) if len(t.split()) >= MIN_WORDS]
    originals = rng.sample(long_rows, min(planted, len(long_rows)))
    pairs = []  # (original row, copy row, rate, true Jaccard)
    for k, i in enumerate(originals):
        rate = RATES[k % len(RATES)]
        copy = " ".join(edit_words(rng, texts[i].split(), rate, vocab))
        if copy in seen:
            continue
        seen.add(copy)
        texts.append(copy)
        origin.append("planted")
        pairs.append((i, len(texts) - 1, rate, true_jaccard(texts[i], copy)))
    order = list(range(len(texts)))
    rng.shuffle(order)  # position in the corpus = source_row, so keepers are not always the originals
    row_of = {i: k for k, i in enumerate(order)}
    return {"texts": [texts[i] for i in order], "origin": [origin[i] for i in order],
            "pairs": [(row_of[a], row_of[b], rate, j) for a, b, rate, j in pairs],
            "real_rows_available": available, "long_rows": len(long_rows)}


def planted_jaccard(pairs: list) -> dict:
    out = {}
    for rate in RATES:
        js = sorted(p[3] for p in pairs if p[2] == rate)
        if js:
            out[f"{rate:.0%}"] = {"copies": len(js), "min": round(js[0], 4), "p10": round(js[len(js) // 10], 4),
                                  "median": round(js[len(js) // 2], 4), "max": round(js[-1], 4)}
    return out


# ----------------------------------------------------------------------------- scoring
def _example(a: str, b: str, j: float, src_a: str, src_b: str, width: int = 160) -> dict:
    """A pair as shown in the JSON: where the two texts start to differ (after a shared prefix)."""
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, k - 40)
    return {"jaccard": round(j, 3), "sources": [src_a, src_b], "words": [len(a.split()), len(b.split())],
            "shared_prefix_chars": k, "a": a[start:start + width], "b": b[start:start + width]}


def score(spark, corpus: dict, work: Path, threshold: float, examples: int) -> dict:
    texts, origin, pairs = corpus["texts"], corpus["origin"], corpus["pairs"]
    edges: list = []
    metrics, removed, secs = run_ours(spark, dedup_table(texts), work, f"t{threshold}",
                                      [f"dedup.near.threshold={threshold}"], edges=edges)
    ids = [content_id(t, "") for t in texts]
    row_of_id = {i: k for k, i in enumerate(ids)}
    keeper_of = {r["source_row"]: row_of_id[r["duplicate_of"]] for r in removed}

    def component(row: int) -> int:
        return keeper_of.get(row, row)

    partner = {}
    for a, b, _, _ in pairs:
        partner[a], partner[b] = b, a

    recall, ceiling = {}, {}
    for rate in RATES:
        sel = [p for p in pairs if p[2] == rate]
        recall[f"{rate:.0%}"] = round(sum(component(a) == component(b) for a, b, _, _ in sel) / max(len(sel), 1), 4)
        ceiling[f"{rate:.0%}"] = round(sum(j >= threshold for *_, j in sel) / max(len(sel), 1), 4)

    edge_true = [true_jaccard(texts[a], texts[b]) for a, b, _ in edges]
    good_pairs = sum(partner.get(a) == b or j >= threshold for (a, b, _), j in zip(edges, edge_true))
    good_removed = 0
    for row, keep in keeper_of.items():
        if partner.get(row) == keep or true_jaccard(texts[row], texts[keep]) >= threshold:
            good_removed += 1

    rng = random.Random(5)
    natural = [(a, b, j) for (a, b, _), j in zip(edges, edge_true) if origin[a] != "planted" and origin[b] != "planted"]
    by_band = {}
    for lo, hi in BANDS:
        sel = [p for p in natural if lo <= p[2] < hi]
        if not sel:
            continue
        shown = rng.sample(sel, min(examples, len(sel)))
        by_band[f"[{lo:.2f},{min(hi, 1.0):.2f}{']' if hi > 1 else ')'}"] = {
            "pairs": len(sel),
            "examples": [_example(texts[a], texts[b], j, origin[a], origin[b]) for a, b, j in shown]}
    removed_real = Counter(origin[r] for r in keeper_of if origin[r] != "planted" and partner.get(r) is None)
    b, r = bands_rows(threshold, 128)
    return {
        "threshold": threshold, "bands": b, "rows_per_band": r, "seconds": round(secs, 2),
        "recall": recall, "ceiling": ceiling,
        "reported_pairs": len(edges),
        "pair_precision": round(good_pairs / max(len(edges), 1), 4),
        "removed": len(removed),
        "removal_precision": round(good_removed / max(len(removed), 1), 4),
        "natural": {"reported_pairs": len(natural), "removed_real_rows": sum(removed_real.values()),
                    "removed_real_rows_by_source": dict(sorted(removed_real.items())), "by_jaccard": by_band},
        "pair_checks": metrics.get("pair_checks"), "giant_buckets": metrics.get("giant_buckets"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30_000, help="distinct real rows sampled from ../shared/data")
    ap.add_argument("--planted", type=int, default=3_000, help="edited copies (a third per edit rate)")
    ap.add_argument("--thresholds", default="0.7,0.72,0.75,0.8")
    ap.add_argument("--examples", type=int, default=3, help="natural pairs shown per Jaccard band")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out")
    args = ap.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    t0 = time.perf_counter()
    corpus = build_corpus(args.rows, args.planted)
    log(f"corpus: {len(corpus['texts'])} rows, {len(corpus['pairs'])} planted, in {time.perf_counter() - t0:.1f}s")
    spark = (SparkSession.builder.master(args.master).appName("bench-near-threshold")
             .config("spark.sql.shuffle.partitions", "8").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.driver.memory", "3g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    result: dict = {"rows": len(corpus["texts"]), "real_rows": len(corpus["texts"]) - len(corpus["pairs"]),
                    "real_rows_available": corpus["real_rows_available"],
                    f"real_rows_with_{MIN_WORDS}_words": corpus["long_rows"], "planted": len(corpus["pairs"]),
                    "real_rows_by_source": dict(sorted(Counter(o for o in corpus["origin"] if o != "planted").items())),
                    "planted_jaccard": planted_jaccard(corpus["pairs"]), "master": args.master,
                    "cores": os.cpu_count(), "by_threshold": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for t in thresholds:
                res = score(spark, corpus, Path(tmp), t, args.examples)
                log(json.dumps({k: v for k, v in res.items() if k != "natural"}))
                result["by_threshold"].append(res)
    finally:
        spark.stop()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
