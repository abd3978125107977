"""Does week n's dedup need more Spark JVM memory because of the programme's history?

``bench_history.py --weeks 8`` saw the Spark JVM's peak RSS grow week after week while the
history it read stayed under 2 MB.  This script reruns one week's ``selectllm dedup`` (the
week's JSONL and config from that benchmark's work folder) against the history as it was before
that week (a copy whose ``history.json`` names only the earlier commits) and against an empty
history, alternately, at the default driver heap and at a small one, and samples the JVM's RSS
every 0.3 s.  With ``--gc-log`` each run also writes the JVM's GC log (``-Xlog:gc``) and the
script reads from it the largest heap the JVM committed (what its RSS follows) and the number of
GC pauses caused by humongous allocations (objects of half a G1 region or more).

If the week completes with the same counts at a small heap, the higher RSS at the default heap
is heap the JVM grew into before collecting, not memory the history needs.

Prints one JSON object: per case (``empty@default`` ...), the runs' JVM peak RSS (GB), seconds,
the stage's summary line and, with ``--gc-log``, ``heap_committed_max_mb`` / ``humongous``.
Example (after ``python benchmarks/bench_history.py --weeks 8 --week-rows 600 --budget 20
--no-union-run --work /tmp/bench-hist8``):
``python benchmarks/bench_history_jvm.py --work /tmp/bench-hist8 --week 8 --small-heap 1g,512m --gc-log``
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

SELECTLLM = [sys.executable, "-m", "selectllm.cli"]
HEAP = re.compile(r"\d+M->\d+M\((\d+)M\)")


def history_before(src: Path, dst: Path, week: int) -> int:
    """A copy of the history ``src`` whose index names only the commits before week ``week``'s."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    (dst / "lock.json").unlink(missing_ok=True)
    index = json.loads((dst / "history.json").read_text())
    keep = [c for c in index["commits"] if not str(c.get("run_id", "")).startswith(f"week-{week}-")]
    keep = keep[: week - 1]
    index["commits"] = keep
    (dst / "history.json").write_text(json.dumps(index))
    return len(keep)


def run_dedup(work: Path, week: int, history: Path, run: Path, heap: str | None, gc_log: Path | None) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    cmd = SELECTLLM + ["dedup", str(work / "cfg.yaml"), "--run-dir", str(run),
                       "--set", f"input.paths=[{work / f'week-{week}.jsonl'}]", "--set", f"history={history}"]
    if heap:
        cmd += ["--set", f"spark.conf.spark.driver.memory={heap}"]
    if gc_log:
        gc_log.unlink(missing_ok=True)
        cmd += ["--set", f"spark.conf.spark.driver.extraJavaOptions=-Xlog:gc:file={gc_log}"]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while p.poll() is None:
        try:
            for c in psutil.Process(p.pid).children(recursive=True):
                if "java" in c.name():
                    peak = max(peak, c.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.3)
    out = p.stdout.read() if p.stdout else ""
    done = [x for x in out.splitlines() if x.startswith("✔ dedup")]
    res = {"jvm_peak_gb": round(peak / 2**30, 2), "seconds": round(time.time() - t0, 1),
           "line": done[0] if done else out[-400:], "exit": p.returncode}
    if gc_log and gc_log.exists():
        text = gc_log.read_text()
        res["heap_committed_max_mb"] = max((int(x) for x in HEAP.findall(text)), default=None)
        res["humongous"] = text.count("Humongous")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="bench_history.py's work folder (cfg.yaml, week-N.jsonl, history/)")
    ap.add_argument("--week", type=int, default=8)
    ap.add_argument("--small-heap", default="1g", help="small spark.driver.memory values to try (comma list)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per case at the default heap")
    ap.add_argument("--gc-log", action="store_true", help="also read the JVM's GC log")
    args = ap.parse_args()
    work = Path(args.work)
    scratch = work / "jvm-check"
    scratch.mkdir(exist_ok=True)
    earlier = history_before(work / "history", scratch / "history-before", args.week)
    cases = [(h, None) for _ in range(args.repeat) for h in ("empty", "history")]
    cases += [(h, heap) for heap in args.small_heap.split(",") if heap for h in ("empty", "history")]
    out: dict = {"week": args.week, "earlier_commits": earlier, "cases": {}}
    for i, (hist, heap) in enumerate(cases):
        history = scratch / f"empty-{i}" if hist == "empty" else scratch / "history-before"
        shutil.rmtree(scratch / f"empty-{i}", ignore_errors=True)
        res = run_dedup(work, args.week, history, scratch / f"run-{i}", heap,
                        scratch / f"gc-{i}.log" if args.gc_log else None)
        key = f"{hist}@{heap or 'default'}"
        out["cases"].setdefault(key, []).append(res)
        print(key, json.dumps(res), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
