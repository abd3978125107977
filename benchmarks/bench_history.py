"""Continuous selection: one run per "week" against one history, against one run over all weeks.

Weeks are built from the distinct real rows of ../shared/data (seeded; written under --work,
never into the repository).  Week n holds ``--week-rows`` new rows, plus overlaps with the weeks
before it: ``--repeat`` x week-rows exact repeats of earlier weeks' rows (the same record again,
up to case, spacing and punctuation), ``--near`` x week-rows near copies of earlier rows (one word
added at the end of the input, or of the instruction without one), and a near copy of **every row selected in the weeks before** (the same edit:
a row picked last week comes back slightly changed).  Each week runs ``selectllm run`` with
``history`` set and budget B (``--budget``); then one run over all weeks' rows with budget
``weeks`` x B and no history.

Prints one JSON object:

* ``weeks``: per week, rows read, seen before (dropped), selected, seconds and peak RSS per
  process kind (:mod:`bench_scale`'s sampler), history size on disk before the run;
* ``selected_twice`` (ids selected by two weeks: must be 0); ``near_copies_selected``: planted
  near copies of an earlier selection that a later week selected (all planted copies, and those
  whose word-5-gram Jaccard to their original is >= ``dedup.near.threshold``, the tool's
  definition of a near copy);
* ``coverage``: over the all-weeks run's pool (its embedded rows), the cosine distance of each row
  to the nearest selected row: mean and max for the union of the weekly selections and for the
  one run with budget weeks x B, and their ratios.

Example: ``python benchmarks/bench_history.py --weeks 4 --week-rows 6000 --budget 150 --out /tmp/history.json``
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import load_records  # noqa: E402
from bench_scale import peak_by_kind, run_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXTRA_WORDS = ["today", "please", "briefly", "again", "now", "quickly", "carefully", "here"]


def distinct_rows(seed: int) -> list[dict]:
    from selectllm.text.normalize import clean_text, content_id

    seen, out = set(), []
    for r in load_records():
        ident = content_id(clean_text(r["instruction"]), clean_text(r["input"]))
        if ident not in seen and r["instruction"].strip():
            seen.add(ident)
            out.append({"instruction": r["instruction"], "input": r["input"]})
    random.Random(seed).shuffle(out)
    return out


def near_copy(r: dict, rng: random.Random) -> dict:
    """One word more at the very end (of the input when there is one)."""
    word = rng.choice(EXTRA_WORDS)
    if r["input"].strip():
        return {"instruction": r["instruction"], "input": r["input"].rstrip() + " " + word}
    return {"instruction": r["instruction"].rstrip() + " " + word, "input": r["input"]}


def jaccard(a: dict, b: dict, ngram: int = 5) -> float:
    from selectllm.text.minhash import shingle_text

    def grams(r):
        w = shingle_text(r["instruction"], r["input"]).split()
        return {" ".join(w[i:i + ngram]) for i in range(max(1, len(w) - ngram + 1))}

    x, y = grams(a), grams(b)
    return len(x & y) / max(1, len(x | y))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run(cfg: Path, run_dir: Path, sets: list[str], log) -> dict:
    cmd = [sys.executable, "-m", "selectllm.cli", "run", str(cfg), "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    rc, peaks, seconds, _ = run_command(cmd, 0.5, log)
    if rc != 0:
        raise SystemExit(f"run {run_dir} failed (exit {rc}); see the log")
    m = json.loads((run_dir / "manifest.json").read_text())
    return {"seconds": round(seconds, 1), "peak_rss_mb": peak_by_kind(peaks),
            "stage_seconds": {s: e.get("seconds") for s, e in m["stages"].items()},
            "dedup": m["stages"]["dedup"]["counts"], "cluster": m["stages"]["cluster"]["counts"]}


def vectors(run_dir: Path, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    ds = pds.dataset(sorted((run_dir / "embed").glob("part-*.parquet")), format="parquet")
    t = ds.to_table(columns=["id", "embedding"], filter=None if ids is None else pc.field("id").isin(ids))
    col = t.column("embedding").combine_chunks()
    x = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(t), -1)
    return t.column("id").to_pylist(), x


def coverage(pool: np.ndarray, chosen: np.ndarray) -> dict:
    best = np.full(len(pool), -np.inf, dtype=np.float32)
    for s in range(0, len(chosen), 2048):
        np.maximum(best, (pool @ chosen[s:s + 2048].T).max(axis=1), out=best)
    d = np.maximum(1.0 - best, 0.0)
    return {"mean": round(float(d.mean()), 4), "max": round(float(d.max()), 4),
            "p99": round(float(np.quantile(d, 0.99)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weeks", type=int, default=4)
    ap.add_argument("--week-rows", type=int, default=6000)
    ap.add_argument("--budget", type=int, default=150)
    ap.add_argument("--repeat", type=float, default=0.2)
    ap.add_argument("--near", type=float, default=0.05)
    ap.add_argument("--strategy", default="selectllm")
    ap.add_argument("--backend", default="static", help="embed.backend (static: fast on CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the weeks and the runs (default: a temp folder)")
    ap.add_argument("--no-union-run", action="store_true", help="skip the one run over all weeks")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="more --set for every run")
    ap.add_argument("--compare-with", default=None,
                    help="another bench --work folder (same data args, other --set): the union of its first "
                         "--weeks weekly selections is measured over the same pool too")
    ap.add_argument("--union-from", default=None,
                    help="an all-weeks run made before (same --weeks/--week-rows/--budget/--seed): reused, not rerun")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-history-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = (work / "runs.log").open("w")
    rng = random.Random(args.seed)
    rows = distinct_rows(args.seed)
    need = args.weeks * args.week_rows
    if len(rows) < need:
        raise SystemExit(f"only {len(rows)} distinct rows for {need}")
    cfg = work / "cfg.yaml"
    cfg.write_text(json.dumps({
        "embed": {"backend": args.backend},
        "select": {"strategy": args.strategy, "budget": args.budget},
        "llm": {"provider": "simulator", "concurrency": 16, "max_usd": 50.0, "simulator": {"latency_ms": 1}},
        "spark": {"master": "local[2]"}, "ray": {"num_cpus": 2}}))
    history = work / "history"
    base_sets = [f"embed.backend={args.backend}", *args.sets]

    earlier: list[dict] = []  # every row of the weeks so far (fresh ones)
    planted: list[tuple[dict, dict]] = []  # (near copy of an earlier selection, the selected original)
    picked: dict[str, int] = {}  # id -> week that selected it
    by_id: dict[str, dict] = {}
    weeks, files = [], []
    twice = 0
    for n in range(args.weeks):
        fresh = rows[n * args.week_rows:(n + 1) * args.week_rows]
        extra: list[dict] = []
        copies_of_selected: list[tuple[dict, dict]] = []
        if earlier:
            extra += [dict(r) for r in rng.sample(earlier, min(len(earlier), int(args.repeat * args.week_rows)))]
            extra += [near_copy(r, rng) for r in rng.sample(earlier, min(len(earlier), int(args.near * args.week_rows)))]
            for ident, week in picked.items():
                if week == n - 1:  # last week's picks come back, slightly changed
                    c = near_copy(by_id[ident], rng)
                    copies_of_selected.append((c, by_id[ident]))
            extra += [c for c, _ in copies_of_selected]
        planted += copies_of_selected
        week_rows = fresh + extra
        rng.shuffle(week_rows)
        path = work / f"week-{n + 1}.jsonl"
        write_jsonl(path, week_rows)
        files.append(str(path))
        before = du(history)
        res = run(cfg, work / f"week-{n + 1}", [f"input.paths=[{path}]", f"history={history}", *base_sets], log)
        sel = [json.loads(x) for x in (work / f"week-{n + 1}" / "selected.jsonl").read_text().splitlines()]
        for s in sel:
            twice += s["id"] in picked
            picked[s["id"]] = n
            by_id[s["id"]] = {"instruction": s["instruction"], "input": s["input"]}
        earlier += fresh
        d = res["dedup"]
        commit = next(c for c in json.loads((history / "history.json").read_text())["commits"]
                      if c.get("run_dir") == str(work / f"week-{n + 1}"))
        added = du(history) - before
        weeks.append({"week": n + 1, "rows": len(week_rows), "read": d["read"], "kept": d["kept"],
                      "seen_duplicates": d.get("seen_duplicates", 0), "near_duplicates": d["near_duplicates"],
                      "history_candidates": d.get("near_history_candidates", 0),
                      "selected": len(sel), "prior_centers": res["cluster"].get("prior_centers", 0),
                      "covered_rows": res["cluster"].get("covered_rows", 0),
                      "history_bytes_before": before, "history_bytes_added": added,
                      "history_bytes_per_row_read": round(added / max(1, d["read"]), 1),
                      "history_record_seconds": round(commit["summary"].get("prepare_seconds", 0)
                                                      + commit.get("write_seconds", 0), 2),
                      "seconds": res["seconds"], "stage_seconds": res["stage_seconds"],
                      "peak_rss_mb": res["peak_rss_mb"]})
        print(json.dumps(weeks[-1]), file=sys.stderr)

    from selectllm.text.normalize import clean_text, content_id

    def ident(r):
        return content_id(clean_text(r["instruction"]), clean_text(r["input"]))

    threshold = 0.7
    copy_ids = {ident(c): jaccard(c, o) for c, o in planted}
    chosen_copies = [i for i in copy_ids if i in picked]
    out = {"args": vars(args), "weeks": weeks, "selected_total": len(picked), "selected_twice": twice,
           "planted_copies_of_selections": len(copy_ids),
           "planted_copies_at_threshold": sum(1 for j in copy_ids.values() if j >= threshold),
           "near_copies_selected": len(chosen_copies),
           "near_copies_selected_at_threshold": sum(1 for i in chosen_copies if copy_ids[i] >= threshold)}
    if not args.no_union_run:
        union_dir = Path(args.union_from) if args.union_from else work / "all-weeks"
        res = {"seconds": None, "peak_rss_mb": None} if args.union_from else run(
            cfg, union_dir, [f"input.paths=[{','.join(files)}]", f"select.budget={args.weeks * args.budget}",
                             *base_sets], log)
        _, pool = vectors(union_dir)
        one = [json.loads(x)["id"] for x in (union_dir / "selected.jsonl").read_text().splitlines()]
        # the weekly selections' vectors, from the weeks' own runs (a near copy dropped from the
        # all-weeks pool is still a selected row of its week)
        weekly = np.concatenate([vectors(work / f"week-{n + 1}", [i for i, w in picked.items() if w == n])[1]
                                 for n in range(args.weeks)])
        cov_weeks, cov_one = coverage(pool, weekly), coverage(pool, vectors(union_dir, one)[1])
        out["coverage"] = {"pool_rows": len(pool), "weekly_union": cov_weeks, "one_run_budget_all": cov_one,
                           "ratio_mean": round(cov_weeks["mean"] / cov_one["mean"], 4),
                           "ratio_max": round(cov_weeks["max"] / cov_one["max"], 4),
                           "one_run_seconds": res["seconds"], "one_run_peak_rss_mb": res["peak_rss_mb"]}
        if args.compare_with:  # the same weeks selected with other settings (e.g. covered_quotas)
            other = Path(args.compare_with)
            picks = [vectors(other / f"week-{n + 1}", [json.loads(x)["id"] for x in
                                                        (other / f"week-{n + 1}" / "selected.jsonl").read_text().splitlines()])[1]
                     for n in range(args.weeks)]
            cov_other = coverage(pool, np.concatenate(picks))
            out["coverage"]["compared"] = {"work": str(other), "weekly_union": cov_other,
                                           "ratio_mean": round(cov_other["mean"] / cov_one["mean"], 4),
                                           "ratio_max": round(cov_other["max"] / cov_one["max"], 4)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
