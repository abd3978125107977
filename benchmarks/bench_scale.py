"""The whole pipeline at N rows in ONE JSONL file: seconds and peak RSS per stage and process kind.

    python benchmarks/bench_scale.py --rows 100000 [--stages dedup,embed,...] [--set key=value]...
                                     [--work /tmp/bench_scale] [--plot out.png] [--interval 1.0]
                                     [--timeout SECONDS]
    python benchmarks/bench_scale.py --compare a.json b.json ...   # tables from saved results

Builds N rows from ../shared/data (real instructions, each spliced with a real context window
taken from another record's text, so rows are distinct like a day of logs), plants exact copies
(4%) and near copies (3%: one word changed) of earlier rows, writes them to one JSONL file (with
each record's output, as a data lake would hold it), then runs ``selectllm run`` (or the listed
stages, one ``selectllm <stage>`` each) with the default settings, the input path and
``llm.provider: simulator`` plus any ``--set`` overrides.

The corpus's shape has knobs: ``--context-words MIN-MAX`` (the window's length: the row's
bytes), ``--long-answers W`` (windows only from real answers of W+ words), ``--exact-rate``,
``--exact-upper`` (exact copies upper-cased: the same id), ``--near-rate``, ``--near-edits``
(words changed in a near copy's instruction), ``--instructions K`` (only K distinct
instructions cycled: templated prompts with different contexts, which fill LSH buckets).  Rows
of ~1 KB: ``--context-words 60-120 --long-answers 120`` (991 B per row); ~2 KB:
``--context-words 200-340 --long-answers 340`` (2,038 B).  ``--mixed-context`` builds the
context from real sentences of random records instead of one answer's window: with few long
answers, windows of one answer overlap and most rows become near copies of each other (36% of
20,000 rows of ~1 KB have a copy at Jaccard >= 0.7); mixed, only the planted copies remain (14%:
each planted copy and its original). ``--context-words 200-340 --mixed-context``: 2,072 B a row.  A shape other than the default gets
its own input file name (``rows_N_<shape>.jsonl``); the result's ``input`` has the shape and
the bytes per row.

While it runs, every process of the run's tree is sampled with psutil (every ``--interval``
seconds) and put in one kind: ``driver`` (the selectllm process), ``spark_jvm``, ``spark_python``
(PySpark workers), ``ray_workers`` (Ray actors and task workers, ``ray::*``), ``ray_system``
(raylet, GCS, agents) or ``other``.  The stage running at a sample is read from selectllm's own
"▶ stage" / "✔ stage" lines.  Printed: one JSON object with, per stage, its seconds (from the
manifest) and per kind the peak of the kind's summed RSS and the largest single process; plus the
input's size, the config file used, ``peak_by_kind`` (each kind's peak over the whole run) and
each stage's rows per second per core (its input rows / seconds / CPUs).  RSS sums count pages shared by forked workers once per process (an upper bound).
``--timeout`` stops each selectllm command after that many seconds (Ctrl-C, a minute's grace, then
SIGKILL to its process group) and still prints what was measured: the stages done, and the peaks
of the one that was running (``stopped_by_timeout: true``).
The plot (PNG) shows the same: seconds per stage and peak RSS per stage and kind.
``--compare`` prints Markdown tables from saved results: seconds and rows/s/core per stage, and
each kind's peak RSS per size with its ratio to the ``--base`` size's (default: the first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
STAGES = ["dedup", "embed", "cluster", "select", "report"]
KINDS = ["driver", "spark_jvm", "spark_python", "ray_workers", "ray_system", "other"]


# ----------------------------------------------------------------------------- the input
@dataclass(frozen=True)
class Shape:
    """The corpus's shape (``--context-words`` ... on the command line)."""

    context_words: tuple[int, int] = (8, 40)  # words of real text appended to each row's input
    long_answers: int = 0  # take those words only from answers (outputs) of at least this many words
    exact_rate: float = 0.04  # exact copies of an earlier row
    exact_upper: bool = False  # ... upper-cased (the same row once normalized)
    near_rate: float = 0.03  # near copies of an earlier row
    near_edits: int = 1  # words of the copy's instruction replaced
    instructions: int = 0  # distinct instructions cycled through (0: every real one); fewer = templated logs
    mixed: bool = False  # the context is real sentences of random records, not one answer's contiguous words

    def tag(self) -> str:
        return (f"c{self.context_words[0]}-{self.context_words[1]}_l{self.long_answers}_e{self.exact_rate:g}"
                f"{'u' if self.exact_upper else ''}_n{self.near_rate:g}x{self.near_edits}_i{self.instructions}"
                f"{'_m' if self.mixed else ''}")


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(texts) -> list[list[str]]:
    """The real sentences (as word lists, 4+ words) of ``texts``: the pieces of a mixed context."""
    return [w for t in texts for s in SENTENCE_END.split(t) if len(w := s.split()) >= 4]


def mixed_window(pool: list[list[str]], n: int, rng: random.Random) -> str:
    """``n`` words of real sentences drawn at random from ``pool`` (each from anywhere in the
    corpora), so two rows share a span only when a planted copy or chance puts it there."""
    out: list[str] = []
    while len(out) < n:
        out.extend(pool[rng.randrange(len(pool))])
    return " ".join(out[:n])


def build_input(path: Path, rows: int, seed: int = 0, shape: Shape = Shape()) -> dict:
    """N JSONL rows from the shared corpora; returns what was planted."""
    from _data import SHARED, FILES

    recs = []
    for name in FILES:
        with (SHARED / name).open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    recs.append((r["instruction"], r.get("input") or "", r.get("output") or ""))
    if shape.mixed and shape.long_answers:
        raise SystemExit("--mixed-context and --long-answers exclude each other")
    if shape.mixed:  # contexts of random real sentences: rows distinct but for the planted copies
        words = sentences(r[2] for r in recs)
    elif shape.long_answers:  # context windows from long real answers only
        words = [w for w in (r[2].split() for r in recs) if len(w) >= shape.long_answers]
    else:
        words = [(r[1] + " " + r[2]).split() for r in recs]
    if not words:
        raise SystemExit(f"no answer of {shape.long_answers}+ words in {SHARED}")
    n_instr = min(shape.instructions or len(recs), len(recs))
    lo, hi = shape.context_words
    rng = random.Random(seed)
    written: list[str] = []  # only the last few thousand lines, for copies (bounded memory)
    exact = near = 0
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            roll = rng.random()
            if written and roll < shape.exact_rate:
                line = written[rng.randrange(len(written))]  # exact copy of an earlier row
                if shape.exact_upper:
                    obj = json.loads(line)
                    obj["instruction"], obj["input"] = obj["instruction"].upper(), obj["input"].upper()
                    line = json.dumps(obj, ensure_ascii=False)
                exact += 1
            elif written and roll < shape.exact_rate + shape.near_rate:
                obj = json.loads(written[rng.randrange(len(written))])
                toks = obj["instruction"].split()
                for _ in range(shape.near_edits):
                    toks[rng.randrange(len(toks))] = rng.choice(["please", "kindly", "now", "briefly"])
                obj["instruction"] = " ".join(toks)
                line = json.dumps(obj, ensure_ascii=False)
                near += 1
            else:
                instr, inp, out = recs[i % n_instr]
                if shape.mixed:
                    window = mixed_window(words, rng.randint(lo, hi), rng)
                else:
                    ctx = words[rng.randrange(len(words))]
                    a = rng.randrange(max(1, len(ctx) - lo)) if ctx else 0
                    window = " ".join(ctx[a:a + rng.randint(lo, hi)])
                obj = {"instruction": instr, "input": (inp + "\n" + window).strip(), "output": out}
                line = json.dumps(obj, ensure_ascii=False)
            f.write(line + "\n")
            written.append(line)
            if len(written) > 5000:
                written = written[-2500:]
    size = path.stat().st_size
    return {"rows": rows, "planted_exact": exact, "planted_near": near, "bytes": size,
            "bytes_per_row": round(size / max(rows, 1)), "shape": asdict(shape), "distinct_instructions": n_instr}


# ----------------------------------------------------------------------------- sampling
def kind_of(proc, root_pid: int) -> str:
    try:
        if proc.pid == root_pid:
            return "driver"
        name = proc.name()
        cmd = " ".join(proc.cmdline()[:4])
    except Exception:
        return "other"
    if name == "java" or "java" in cmd.split(" ")[0]:
        return "spark_jvm"
    if "pyspark.daemon" in cmd or "pyspark.worker" in cmd or "pyspark/daemon" in cmd:
        return "spark_python"
    if name.startswith("ray::") or cmd.startswith("ray::"):
        return "ray_workers"
    if "ray" in cmd or name in ("raylet", "gcs_server"):
        return "ray_system"
    return "other"


class Sampler:
    def __init__(self, root_pid: int, interval: float):
        self.root_pid, self.interval = root_pid, interval
        self.stage = "start"
        self.peaks: dict[str, dict[str, dict[str, int]]] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        sums: dict[str, int] = {}
        single: dict[str, int] = {}
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            k = kind_of(p, self.root_pid)
            sums[k] = sums.get(k, 0) + rss
            single[k] = max(single.get(k, 0), rss)
        st = self.peaks.setdefault(self.stage, {})
        for k in sums:
            e = st.setdefault(k, {"peak_rss_sum_mb": 0, "peak_rss_one_mb": 0, "processes_max": 0})
            e["peak_rss_sum_mb"] = max(e["peak_rss_sum_mb"], sums[k] >> 20)
            e["peak_rss_one_mb"] = max(e["peak_rss_one_mb"], single[k] >> 20)
            e["processes_max"] = max(e["processes_max"], sum(1 for p in procs if kind_of(p, self.root_pid) == k))

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


def stop(proc: subprocess.Popen, fired: threading.Event, grace: float = 60.0) -> None:
    """Ctrl-C to the run (it stops Spark and Ray), then SIGKILL to its whole process group."""
    import signal

    fired.set()
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_command(cmd: list[str], sampler_interval: float, log, timeout: float | None = None
                ) -> tuple[int, dict, float, bool]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            bufsize=1, start_new_session=True)
    fired = threading.Event()
    timer = threading.Timer(timeout, stop, (proc, fired)) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    sampler = Sampler(proc.pid, sampler_interval)
    threading.Thread(target=sampler.loop, daemon=True).start()
    start_re = re.compile(r"▶ (\w+)")
    done_re = re.compile(r"✔ (\w+) in")
    for line in proc.stdout:
        log.write(line)
        log.flush()
        m = start_re.search(line)
        if m:
            sampler.sample()
            sampler.stage = m.group(1)
        elif done_re.search(line):
            sampler.sample()
            sampler.stage = "between"
    rc = proc.wait()
    sampler.stop.set()
    if timer:
        timer.cancel()
    return rc, sampler.peaks, time.perf_counter() - t0, fired.is_set()


def stage_rows(name: str, stages: dict) -> int | None:
    """The rows a stage works through: dedup reads the input; embed, cluster and select (its
    planning and lookups) the deduplicated pool; report has no row rate."""
    def counts(stage: str) -> dict:
        return (stages.get(stage) or {}).get("counts") or {}

    return {"dedup": counts("dedup").get("read"), "embed": counts("embed").get("rows"),
            "cluster": counts("cluster").get("rows"), "select": counts("cluster").get("rows")}.get(name)


def peak_by_kind(peaks: dict) -> dict:
    """Each kind's peak over every stage (and the time between stages)."""
    out: dict[str, dict[str, int]] = {}
    for kinds in peaks.values():
        for k, e in kinds.items():
            o = out.setdefault(k, {"peak_rss_sum_mb": 0, "peak_rss_one_mb": 0})
            o["peak_rss_sum_mb"] = max(o["peak_rss_sum_mb"], e["peak_rss_sum_mb"])
            o["peak_rss_one_mb"] = max(o["peak_rss_one_mb"], e["peak_rss_one_mb"])
    return {k: out[k] for k in KINDS if k in out}


def compare(paths: list[str], base_rows: int | None = None) -> None:
    """Markdown tables from saved results, sizes in the given order; ratios to ``base_rows``'s."""
    rs = [json.loads(Path(p).read_text()) for p in paths]
    b = next((i for i, r in enumerate(rs) if r["input"]["rows"] == base_rows), 0)
    head = " | ".join(f"{r['input']['rows']:,}" for r in rs)
    print(f"| stage: seconds (rows/s/core) | {head} |\n|---|" + "---|" * len(rs))
    for s in STAGES:
        cells = []
        for r in rs:
            e = r["stages"].get(s) or {}
            n = stage_rows(s, r["stages"])
            sec = e.get("seconds")
            rate = f" ({n / sec / r['cpus']:,.0f})" if n and sec else ""
            cells.append(f"{sec:,.1f}{rate}" if sec else "–")
        print(f"| {s} | " + " | ".join(cells) + " |")
    others = [i for i in range(len(rs)) if i != b]
    print(f"\n| peak RSS MB: all processes of the kind (largest one) | {head} | "
          f"ratio to {rs[b]['input']['rows']:,}: " + ", ".join(f"{rs[i]['input']['rows']:,}" for i in others) + " |")
    print("|---|" + "---|" * (len(rs) + 1))
    for k in KINDS:
        vals = [peak_by_kind({**{s: e.get("rss", {}) for s, e in r["stages"].items()},
                              **r.get("outside_stages_rss", {})}).get(k) for r in rs]
        if not any(v and v["peak_rss_sum_mb"] for v in vals):
            continue
        base = vals[b]
        ratio = ", ".join(f"{v['peak_rss_sum_mb'] / base['peak_rss_sum_mb']:.2f} ({v['peak_rss_one_mb'] / base['peak_rss_one_mb']:.2f})"
                          if v and base and base["peak_rss_one_mb"] else "–" for v in (vals[i] for i in others))
        print(f"| {k} | " + " | ".join(f"{v['peak_rss_sum_mb']:,} ({v['peak_rss_one_mb']:,})" if v else "–"
                                     for v in vals) + f" | {ratio} |")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if s in result["stages"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    secs = [result["stages"][s].get("seconds") or 0 for s in stages]
    a.bar(stages, secs, color="#4c72b0")
    a.set_ylabel("seconds")
    a.set_title(f"{result['input']['rows']:,} rows ({result['input']['bytes'] / 1e6:.0f} MB JSONL): seconds per stage")
    width = 0.8 / len(KINDS)
    for j, k in enumerate(KINDS):
        vals = [result["stages"][s].get("rss", {}).get(k, {}).get("peak_rss_sum_mb", 0) / 1024 for s in stages]
        if any(vals):
            b.bar([i + j * width for i in range(len(stages))], vals, width, label=k)
    b.set_xticks([i + 0.4 - width / 2 for i in range(len(stages))], stages)
    b.set_ylabel("peak RSS, GiB (sum over the kind's processes)")
    b.set_title("peak RSS per stage and process kind")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int)
    ap.add_argument("--compare", nargs="+", metavar="RESULT_JSON", help="print tables from saved results")
    ap.add_argument("--base", type=int, default=None, help="--compare: ratios to the result of this many rows")
    ap.add_argument("--stages", default="all", help="all (one `selectllm run`) or a comma list")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    ap.add_argument("--work", default="/tmp/bench_scale")
    ap.add_argument("--plot", default=None, help="PNG path (default: WORK/bench_scale_<rows>.png)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true", help="reuse an existing input file of the same N")
    ap.add_argument("--timeout", type=float, default=None,
                    help="stop each selectllm command after this many seconds and report what was measured")
    shape = ap.add_argument_group("the corpus's shape")
    shape.add_argument("--context-words", default="8-40", metavar="MIN-MAX",
                       help="words of real text appended to each row's input (row length)")
    shape.add_argument("--long-answers", type=int, default=0, metavar="WORDS",
                       help="take the context only from real answers of at least this many words")
    shape.add_argument("--mixed-context", action="store_true",
                       help="build the context from real sentences of random records (no shared windows: "
                            "the only copies are the planted ones)")
    shape.add_argument("--exact-rate", type=float, default=0.04, help="share of exact copies of earlier rows")
    shape.add_argument("--exact-upper", action="store_true", help="exact copies upper-cased (same id)")
    shape.add_argument("--near-rate", type=float, default=0.03, help="share of near copies of earlier rows")
    shape.add_argument("--near-edits", type=int, default=1, help="words changed in a near copy's instruction")
    shape.add_argument("--instructions", type=int, default=0,
                       help="distinct instructions reused (0: every real one, ~73k); fewer = templated logs")
    args = ap.parse_args()
    if args.compare:
        compare(args.compare, args.base)
        return
    if not args.rows:
        ap.error("--rows is required (or --compare)")

    lo, _, hi = args.context_words.partition("-")
    corpus = Shape(context_words=(int(lo), int(hi or lo)), long_answers=args.long_answers,
                   exact_rate=args.exact_rate, exact_upper=args.exact_upper, near_rate=args.near_rate,
                   near_edits=args.near_edits, instructions=args.instructions,
                   mixed=args.mixed_context)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    default = corpus == Shape()
    stem = f"rows_{args.rows}" if default else f"rows_{args.rows}_{corpus.tag()}"
    data = work / f"{stem}.jsonl"
    t0 = time.perf_counter()
    meta_path = work / f"{stem}.json"
    if args.keep and data.exists() and meta_path.exists():
        info = json.loads(meta_path.read_text())
    else:
        info = build_input(data, args.rows, shape=corpus)
        meta_path.write_text(json.dumps(info))
    info["build_seconds"] = round(time.perf_counter() - t0, 1)
    run_dir = work / f"run_{args.rows}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cfg = work / "bench.yaml"
    cfg.write_text(f"run_dir: {run_dir}\ninput:\n  paths: [{data}]\nllm:\n  provider: simulator\n")
    sets = [x for s in args.sets for x in ("--set", s)]
    exe = [sys.executable, "-m", "selectllm.cli"]
    cmds = ([exe + ["run", str(cfg)] + sets] if args.stages == "all"
            else [exe + [s, str(cfg)] + sets for s in args.stages.split(",")])
    peaks: dict = {}
    rcs, wall, stopped = [], 0.0, False
    with (work / f"log_{args.rows}.txt").open("w") as log:
        for cmd in cmds:
            rc, p, secs, timed_out = run_command(cmd, args.interval, log, args.timeout)
            rcs.append(rc)
            wall += secs
            for stage, kinds in p.items():
                peaks.setdefault(stage, {}).update(kinds)
            if rc:
                stopped = timed_out
                break
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    stages = {}
    for s in STAGES:
        entry = manifest.get("stages", {}).get(s)
        if entry or s in peaks:
            stages[s] = {"seconds": (entry or {}).get("seconds"), "status": (entry or {}).get("status"),
                         "counts": {k: v for k, v in ((entry or {}).get("counts") or {}).items()
                                    if k in ("read", "kept", "exact_duplicates", "near_duplicates", "splits",
                                             "rows", "k", "rounds", "shards", "files", "quarantined_total", "selected")},
                         "rss": peaks.get(s, {})}

    for s in stages:
        n = stage_rows(s, stages)
        if n and stages[s]["seconds"]:
            stages[s]["rows_per_s_per_core"] = round(n / stages[s]["seconds"] / (os.cpu_count() or 1), 1)
    result = {"input": info, "command": " ".join(["selectllm", "run" if args.stages == "all" else args.stages,
                                                  "bench.yaml"] + sets),
              "exit_codes": rcs, "stopped_by_timeout": stopped, "wall_seconds": round(wall, 1), "stages": stages,
              "config": cfg.read_text(),
              "outside_stages_rss": {k: v for k, v in peaks.items() if k not in STAGES},
              "peak_by_kind": peak_by_kind(peaks),
              "cpus": os.cpu_count()}
    png = Path(args.plot) if args.plot else work / f"bench_scale_{args.rows}.png"
    try:
        plot(result, png)
        result["plot"] = str(png)
    except Exception as e:  # the figures matter more than the picture
        result["plot_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result, indent=1))
    sys.exit(max(rcs) if rcs else 1)


if __name__ == "__main__":
    main()
