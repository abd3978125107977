"""Runs of one programme against one history: week 2 never picks what week 1 saw or selected
(nor a near copy of a selection), a killed run is recorded once and pays nothing twice, a second
run at once is refused with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import SAMPLE, SELECTLLM, cli
from selectllm.history import History, run_id_for
from selectllm.text.normalize import clean_text, content_id


def sample_records(n: int, skip: int = 0) -> list[dict]:
    """Distinct sample rows (no two with one id), long enough that one added word keeps them near."""
    out, seen, ids = [], 0, set()
    with SAMPLE.open("rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("instruction"), str):
                continue
            ident = content_id(clean_text(rec["instruction"]), clean_text(rec.get("input") or ""))
            words = len(rec["instruction"].split()) + len(str(rec.get("input") or "").split())
            if len(rec["instruction"].split()) >= 6 and words >= 10 and len(raw) < 3000 and ident not in ids:
                ids.add(ident)
                seen += 1
                if seen > skip:
                    out.append({"instruction": rec["instruction"], "input": rec.get("input") or ""})
            if len(out) == n:
                break
    return out


def near_copy(r: dict, word: str = "today") -> dict:
    """One word more at the very end (of the input when there is one): one shingle differs."""
    if r["input"]:
        return {"instruction": r["instruction"], "input": r["input"] + " " + word}
    return {"instruction": r["instruction"] + " " + word, "input": r["input"]}


# 60 distinct words: a row of the first 36, its near copy with 10 more (Jaccard of 5-word shingles
# 32/42 = 0.76), and that copy's near copy with 10 more again (42/52 = 0.81 to it, 32/52 = 0.62
# to the first row: below the 0.7 threshold)
CHAIN_WORDS = ("river forest valley mountain ocean desert island harbor village castle bridge tower "
               "garden meadow canyon glacier volcano prairie lagoon marsh orchard vineyard quarry "
               "lighthouse cottage mill bakery market library museum theater stadium airport station "
               "tunnel highway railway canal reservoir pipeline factory warehouse shipyard refinery "
               "observatory laboratory hospital school college chapel temple fortress palace "
               "monastery cathedral plaza fountain statue monument cemetery").split()


def chain_rows() -> list[dict]:
    """(a row, its near copy, a near copy of that copy that is not near the row)."""
    head = "Write a short travel story that mentions, in this order:"
    return [{"instruction": head, "input": " ".join(CHAIN_WORDS[:n])} for n in (36, 46, 56)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def config(tmp_path: Path, name: str, corpus: Path, history: Path, budget: int = 8, **extra) -> Path:
    cfg = {
        "run_dir": str(tmp_path / name),
        "input": {"paths": [str(corpus)]},
        "embed": {"batch_size": 32},
        "select": {"strategy": "selectllm", "budget": budget, "candidates_per_prompt": 5},
        "llm": {"provider": "simulator", "concurrency": 4, "max_usd": 1.0, "simulator": {"latency_ms": 1}},
        "history": str(history),
        **extra,
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(json.dumps(cfg))
    return p


def selected(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.ray
def test_week_two_skips_what_week_one_saw_and_its_near_copies(tmp_path, spark, ray_local):
    hist = tmp_path / "history"
    chain = chain_rows()
    base = sample_records(120)
    week1 = base + chain[:2]  # week 1 keeps chain[0], removes chain[1] as its near copy
    cli("run", str(config(tmp_path, "week1", write_jsonl(tmp_path / "w1.jsonl", week1), hist)))
    first = selected(tmp_path / "week1")
    # week 2: 60 repeats of week 1 (all its selections among them), near copies of every
    # selection (one more word), near copies of 20 rows week 1 saw but did not select, 80 new rows
    picked = {(r["instruction"], r["input"]) for r in first}
    repeats = [r for r in base if (r["instruction"], r["input"]) in picked]
    others = [r for r in base if (r["instruction"], r["input"]) not in picked]
    repeats += others[:60 - len(repeats)]
    near = [near_copy(r) for r in first]
    near_seen = [near_copy(r, "again") for r in others[-20:]]
    week2 = repeats + near + near_seen + chain[2:] + sample_records(80, skip=120)
    cli("run", str(config(tmp_path, "week2", write_jsonl(tmp_path / "w2.jsonl", week2), hist)))

    second = selected(tmp_path / "week2")
    assert len(second) == 8 and not {r["id"] for r in first} & {r["id"] for r in second}
    near_texts = {(r["instruction"], r["input"]) for r in near}
    assert not [r for r in second if (r["instruction"], r["input"]) in near_texts]
    stats = json.loads((tmp_path / "week2" / "dedup" / "stats.json").read_text())
    assert stats["seen_duplicates"] == len(repeats) + len(near) + len(near_seen) + 1
    # the near copies were found through week 1's MinHash rows, joined on band keys
    assert stats["near"]["history_candidates"] >= len(near) + len(near_seen) + 1
    assert stats["read"] == stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"] + \
        stats["seen_duplicates"] + stats["quarantined_total"]
    dups = pq.read_table(tmp_path / "week2" / "dedup" / "duplicates.parquet").to_pylist()
    seen = [d for d in dups if d["kind"] == "seen"]
    assert len(seen) == len(repeats) + len(near) + len(near_seen) + 1
    first_ids = {r["id"] for r in first}
    c0, c1, c2 = (content_id(clean_text(r["instruction"]), clean_text(r["input"])) for r in chain)
    assert sum(1 for d in seen if d["duplicate_of"] in first_ids and d["id"] not in (d["duplicate_of"], c2)) \
        == len(near)
    week1_ids = {i for p in (tmp_path / "week1" / "dedup").glob("part-*.parquet")
                 for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}
    week1_near = {d["id"]: d["duplicate_of"] for d in
                  pq.read_table(tmp_path / "week1" / "dedup" / "duplicates.parquet").to_pylist() if d["kind"] == "near"}
    copies = [d for d in seen if d["id"] != d["duplicate_of"]]
    assert len(copies) == len(near) + len(near_seen) + 1
    # a near copy of chain[1], which week 1 removed as a near copy of chain[0] (0.68 to chain[0]:
    # not near it): "seen", pointing at a row of that chain (its component's keeper)
    assert week1_near == {**week1_near, c1: c0} and c0 in week1_ids
    assert [d["duplicate_of"] in (c0, c1) for d in copies if d["id"] == c2] == [True]
    assert all(d["similarity"] >= 0.7 for d in copies if d["id"] != c2)

    m = json.loads((tmp_path / "week2" / "manifest.json").read_text())
    assert m["stages"]["cluster"]["counts"]["prior_centers"] == 8
    centers = pq.read_table(tmp_path / "week2" / "cluster" / "centers.parquet")
    covered = centers.column("covered").to_pylist()  # rows near week 1's picks, per cluster
    assert sum(covered) == m["stages"]["cluster"]["counts"]["covered_rows"]
    assert all(0 <= c <= s for c, s in zip(covered, centers.column("size").to_pylist()))
    h = History(str(hist))
    runs = [c for c in h.commits() if c["kind"] == "run"]
    assert [c["run_id"] for c in runs] == [run_id_for(str(tmp_path / "week1")), run_id_for(str(tmp_path / "week2"))]
    assert runs[0]["files"]["minhash"] and runs[0]["summary"]["minhash"]["num_perm"] == 128
    signed = pq.read_table(h.path(runs[0]["files"]["minhash"][0])).column("id").to_pylist()
    assert sorted(signed) == sorted(week1_ids | set(week1_near))  # every row week 1 kept or removed as near
    s2 = runs[1]["summary"]
    assert s2["selected"] == 8 and s2["prior_selections"] == 8
    assert s2["coverage_mean_cumulative"] <= s2["coverage_mean_run"]
    html = (tmp_path / "week2" / "report.html").read_text()
    assert 'id="history"' in html and runs[0]["run_id"] in html

    # week 1 run again (nothing changed): skipped, and its history entry stays where it was
    tokens = {c["run_id"]: c["token"] for c in runs}
    cli("run", str(config(tmp_path, "week1", tmp_path / "w1.jsonl", hist)))
    assert {c["run_id"]: c["token"] for c in History(str(hist)).commits()} == tokens


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.ray
@pytest.mark.subprocess
def test_kill_mid_select_then_rerun_records_once_and_pays_nothing_twice(tmp_path, spark, ray_local):
    hist = tmp_path / "history"
    corpus = write_jsonl(tmp_path / "w.jsonl", sample_records(150))
    cfg = config(tmp_path, "week", corpus, hist, budget=30,
                 llm={"provider": "simulator", "concurrency": 1, "max_usd": 1.0, "simulator": {"latency_ms": 400}})
    cli("dedup", str(cfg))
    cli("embed", str(cfg))  # dedup and embed in-process (shared engines); the subprocess clusters and selects
    cache = hist / "cache" / "llm"
    proc = subprocess.Popen(SELECTLLM + ["run", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    deadline = time.time() + 240
    bought: set[str] = set()
    while time.time() < deadline and proc.poll() is None and len(bought) < 3:
        bought = {p.stem for p in cache.glob("*/*.json")} if cache.exists() else set()
        time.sleep(0.1)
    assert proc.poll() is None, "select finished before it could be killed"
    # a second run against the same history while the first holds it: refused with one line
    other = config(tmp_path, "other", corpus, hist)
    r = subprocess.run(SELECTLLM + ["run", str(other)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "in use by run week-" in lines[0], r.stderr
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert bought and History(str(hist)).commits() == []  # killed before it completed: not recorded

    cli("run", str(cfg))  # the dead holder's lock is taken over
    commits = History(str(hist)).commits()
    assert [c["run_id"] for c in commits] == [run_id_for(str(tmp_path / "week"))]
    log = [json.loads(x) for x in (tmp_path / "week" / "select" / "requests.jsonl").read_text().splitlines()]
    cached = {x["key"] for x in log if x.get("cached")}
    assert bought <= cached  # every answer bought before the kill came from the programme's cache
    cli("run", str(cfg), "--force", "select")  # a forced rerun replaces its own entry: still once
    assert [c["run_id"] for c in History(str(hist)).commits()] == [commits[0]["run_id"]]
