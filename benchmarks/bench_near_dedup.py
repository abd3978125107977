"""Near-duplicate removal: quality, speed against Spark MLlib and datasketch, robustness.  Prints JSON.

Corpus (seeded, built in memory, never written into the repository):

* every distinct real instruction (+ input) of ../shared/data (~72k after exact dedup);
* ``--planted`` near-duplicate copies of real rows with >= 20 words (half of them >= 60 words
  with low rates, to populate Jaccard >= 0.85): word substitutions, insertions and deletions,
  each word edited with a known probability (one edit at least), each copy with its true
  word-5-gram Jaccard to its original (string shingle sets, no hashing);
* "spliced" filler rows up to ``--n`` rows: the length of a random real row, filled with runs of
  4-10 consecutive words taken from random real rows (real vocabulary and phrases, not duplicates).

Sections (``--sections``, comma-separated):

* ``quality``  - :func:`selectllm.dedup.near.find_near_duplicates` on the whole corpus (local[2]):
  docs/s, precision (removed row vs its keeper, true Jaccard >= threshold) and the recall curve
  of planted pairs by true Jaccard (found = same component).
* ``mllib``    - Spark MLlib ``MinHashLSH.approxSimilarityJoin`` (``--mllib-tables`` hash tables)
  on the same rows (the whole corpus, or ``--subset`` rows), same shingles (word 5-grams of the
  normalized text, hashed to 2^22 features), alternating with ours ``--rounds`` times in the
  same Spark session: seconds (best, median), docs/s, recall, and ours' speed-up at equal or
  better recall.
* ``datasketch`` - datasketch MinHash + MinHashLSH (same bands x rows), one process, same rows.
* ``stage``    - the whole ``dedup`` stage from JSONL files with near dedup off and on.
* ``robust``   - all-identical rows, real and synthetic shared-preamble corpora, 1 MB rows,
  empty-after-normalization rows.

Example: ``python benchmarks/bench_near_dedup.py --n 200000 --out /tmp/near.json``
(``--sections quality`` alone takes ~2 minutes on 2 cores; all sections ~15 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from selectllm.config import load_config  # noqa: E402
from selectllm.text.minhash import bands_rows, candidate_probability, shingle_text, true_jaccard  # noqa: E402
from selectllm.text.normalize import content_id  # noqa: E402

BINS = [0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0001]
RATES = [0.01, 0.02, 0.03, 0.05, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3]  # edit rate per word
LOW_RATES = [0.002, 0.005, 0.01, 0.01, 0.015, 0.02, 0.03]


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- corpus
def _edit(rng: random.Random, words: list[str], rate: float, vocab: list[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        if rng.random() < rate:
            kind = rng.randrange(3)
            if kind == 0:
                out.append(rng.choice(vocab))  # substitution
            elif kind == 1:
                out += [w, rng.choice(vocab)]  # insertion
            # kind == 2: deletion
        else:
            out.append(w)
    if out == words:  # at least one edit
        i = rng.randrange(len(words))
        out = words[:i] + [rng.choice(vocab)] + words[i + 1:]
    return out


def build_corpus(n: int, planted: int, seed: int = 7) -> dict:
    from _data import distinct_shingle_texts

    rng = random.Random(seed)
    texts, origin = distinct_shingle_texts()
    seen = set(texts)
    real = len(texts)
    vocab = sorted({w for t in texts[:20000] for w in t.split()})
    long_ids = [i for i, t in enumerate(texts) if len(t.split()) >= 20]
    very_long = [i for i, t in enumerate(texts) if len(t.split()) >= 60]
    pairs = []  # (original index, copy index, rate, true jaccard)
    # half of the originals have >= 60 words and low edit rates: the Jaccard >= 0.85 region
    # (one edit in L words breaks 5 word 5-grams: Jaccard (L-9)/(L+1))
    hi = rng.sample(very_long, min(planted // 2, len(very_long)))
    rest = rng.sample(sorted(set(long_ids) - set(hi)), min(planted - len(hi), len(long_ids) - len(hi)))
    for k, i in enumerate(hi + rest):
        rate = rng.choice(LOW_RATES if k < len(hi) else RATES)
        copy = " ".join(_edit(rng, texts[i].split(), rate, vocab))
        if copy in seen:
            continue
        seen.add(copy)
        texts.append(copy)
        origin.append("planted")
        pairs.append((i, len(texts) - 1, rate, true_jaccard(texts[i], copy)))
    real_words = [t.split() for t in texts[:real]]
    while len(texts) < n:
        target = len(rng.choice(real_words))
        words: list[str] = []
        while len(words) < target:
            src = rng.choice(real_words)
            a = rng.randrange(len(src))
            words += src[a:a + rng.randint(4, 10)]
        t = " ".join(words[:target])
        if t not in seen:
            seen.add(t)
            texts.append(t)
            origin.append("spliced")
    order = list(range(len(texts)))
    rng.shuffle(order)  # position in the corpus = source_row
    row_of = {i: k for k, i in enumerate(order)}
    return {"texts": [texts[i] for i in order], "origin": [origin[i] for i in order], "real": real,
            "pairs": [(row_of[a], row_of[b], rate, j) for a, b, rate, j in pairs]}


def dedup_table(texts: list[str], rows: list[int] | None = None, source: str = "bench.jsonl") -> pa.Table:
    rows = list(range(len(texts))) if rows is None else rows
    return pa.table({"id": [content_id(t, "") for t in texts], "instruction": texts, "input": [""] * len(texts),
                     "text": [""] * len(texts), "source": [source] * len(texts),
                     "source_row": pa.array(rows, pa.int64())})


# ----------------------------------------------------------------------------- ours
def run_ours(spark, table: pa.Table, workdir: Path, name: str, overrides=(), edges: list | None = None
             ) -> tuple[dict, list[dict], float]:
    """Timed: find_near_duplicates + collecting the removed rows.  ``edges`` receives the
    verified pairs (collected after the clock stops; node = source_row for one source file)."""
    from selectllm.dedup.near import find_near_duplicates

    path = workdir / f"{name}.parquet"
    pq.write_table(table, path)
    cfg = load_config(None, ["dedup.near.enabled=true", *overrides])
    df = spark.read.parquet(str(path))
    t = time.perf_counter()
    res = find_near_duplicates(df, cfg, keep_edges=edges is not None)
    removed = [r.asDict() for r in res.removed.collect()]
    secs = time.perf_counter() - t
    if edges is not None:
        edges += [(r["src"], r["dst"], r["sim"]) for r in res.edges.collect()]
    return res.metrics, removed, secs


def recall_curve(pairs, same) -> list[dict]:
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = [p for p in pairs if lo <= p[3] < hi]
        found = sum(1 for p in sel if same(p))
        out.append({"jaccard": f"[{lo:.2f},{min(hi, 1.0):.2f}{']' if hi > 1 else ')'}", "pairs": len(sel),
                    "found": found, "recall": round(found / len(sel), 4) if sel else None})
    return out


def quality(spark, corpus: dict, workdir: Path, threshold: float, overrides=()) -> dict:
    """Run twice on the whole corpus (the first run starts Spark's Python workers and JIT: cold)."""
    texts, pairs, origin = corpus["texts"], corpus["pairs"], corpus["origin"]
    opts = [f"dedup.near.threshold={threshold}", *overrides]
    cold_metrics, _, cold = run_ours(spark, dedup_table(texts), workdir, "cold", opts)
    log(f"cold run: {cold:.1f}s {cold_metrics['phase_seconds']}")
    edges: list = []
    metrics, removed, secs = run_ours(spark, dedup_table(texts), workdir, "all", opts, edges=edges)
    comp = {r["source_row"]: r["duplicate_of"] for r in removed}
    ids = [content_id(t, "") for t in texts]
    row_of_id = {i: k for k, i in enumerate(ids)}

    def component(row: int) -> str:
        return comp.get(row, ids[row])

    def same(p) -> bool:
        return component(p[0]) == component(p[1])

    # pair precision: every reported similar pair (verified edge), true string Jaccard >= threshold
    edge_true = [true_jaccard(texts[a], texts[b]) for a, b, _ in edges]
    planted_rows = {p[0] for p in pairs} | {p[1] for p in pairs}
    planted_edges = [j for (a, b, _), j in zip(edges, edge_true) if a in planted_rows or b in planted_rows]
    # keeper precision: each removed row against the row it is said to duplicate (chains lower it)
    keeper_ok: dict[str, list[int]] = {}
    for r in removed:
        ok = true_jaccard(texts[r["source_row"]], texts[row_of_id[r["duplicate_of"]]]) >= threshold
        keeper_ok.setdefault(origin[r["source_row"]], []).append(ok)
    natural = [r for r in removed if r["source_row"] not in planted_rows]
    hi = [p for p in pairs if p[3] >= 0.85]
    b, r = metrics["bands"], metrics["rows_per_band"]
    return {
        "docs": len(texts), "real_rows": corpus["real"], "planted_pairs": len(pairs), "settings": opts,
        "seconds": round(secs, 2), "docs_per_s": round(len(texts) / secs, 1),
        "cold_seconds": round(cold, 2), "cold_docs_per_s": round(len(texts) / cold, 1),
        "cold_phase_seconds": cold_metrics["phase_seconds"],
        "metrics": metrics,
        "removed": len(removed), "removed_not_planted": len(natural),
        "pair_precision": round(sum(j >= threshold for j in edge_true) / max(len(edges), 1), 4),
        "pair_precision_planted": round(sum(j >= threshold for j in planted_edges) / max(len(planted_edges), 1), 4),
        "reported_pairs": len(edges), "reported_pairs_planted": len(planted_edges),
        "max_abs_error_reported_vs_true_jaccard": round(max((abs(s - j) for (_, _, s), j in zip(edges, edge_true)),
                                                            default=0.0), 6),
        "precision_vs_keeper": round(sum(sum(v) for v in keeper_ok.values()) / max(len(removed), 1), 4),
        "removed_by_origin": {k: {"removed": len(v), "keeper_jaccard_ge_threshold": round(sum(v) / len(v), 4)}
                              for k, v in sorted(keeper_ok.items())},
        "recall_jaccard_ge_0.85": round(sum(map(same, hi)) / max(len(hi), 1), 4),
        "recall_jaccard_ge_threshold": round(sum(same(p) for p in pairs if p[3] >= threshold)
                                             / max(sum(p[3] >= threshold for p in pairs), 1), 4),
        "false_links_below_threshold": sum(same(p) for p in pairs if p[3] < threshold),
        "recall_curve": recall_curve(pairs, same),
        "lsh_probability": {str(s): round(float(candidate_probability(s, b, r)), 4) for s in (0.7, 0.8, 0.85, 0.9)},
    }


def subset_of(corpus: dict, size: int, seed: int = 3) -> tuple[list[str], list[tuple]]:
    """``size`` rows holding whole planted pairs in the corpus' proportion; pairs renumbered."""
    rng = random.Random(seed)
    texts, pairs = corpus["texts"], corpus["pairs"]
    k = max(1, round(len(pairs) * size / len(texts)))
    chosen = rng.sample(pairs, min(k, len(pairs)))
    in_pairs = {p[0] for p in pairs} | {p[1] for p in pairs}
    rows = [x for p in chosen for x in p[:2]]
    others = [i for i in range(len(texts)) if i not in in_pairs]
    rows += rng.sample(others, size - len(rows))
    rows.sort()
    new = {r: i for i, r in enumerate(rows)}
    return [texts[r] for r in rows], [(new[a], new[b], rate, j) for a, b, rate, j in chosen]


def _shingle_strings(t: str) -> list[str]:
    toks = t.split()
    if len(toks) < 5:
        return [" ".join(toks)] if toks else []
    return [" ".join(toks[i:i + 5]) for i in range(len(toks) - 4)]


def mllib(spark, texts: list[str], pairs, tables: int, threshold: float) -> dict:
    from pyspark.ml.feature import HashingTF, MinHashLSH, NGram
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "rid long, text string").repartition(2)
    t0 = time.perf_counter()
    tok = df.withColumn("tokens", F.split("text", " "))
    ng = NGram(n=5, inputCol="tokens", outputCol="ng").transform(tok)
    ng = ng.withColumn("sh", F.when(F.size("tokens") < 5, F.array(F.concat_ws(" ", "tokens"))).otherwise(F.col("ng")))
    feat = HashingTF(inputCol="sh", outputCol="features", numFeatures=1 << 22, binary=True).transform(ng)
    feat = feat.select("rid", "features").cache()
    model = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=tables, seed=1).fit(feat)
    joined = model.approxSimilarityJoin(feat, feat, 1.0 - threshold, distCol="dist")
    found = {(r["a"], r["b"]) for r in joined.select(F.col("datasetA.rid").alias("a"), F.col("datasetB.rid").alias("b"))
             .where(F.col("a") < F.col("b")).collect()}
    secs = time.perf_counter() - t0
    feat.unpersist()
    hi = [p for p in pairs if p[3] >= 0.85]
    return {"num_hash_tables": tables, "docs": len(texts), "seconds": round(secs, 2),
            "docs_per_s": round(len(texts) / secs, 1), "pairs_found": len(found),
            "recall_jaccard_ge_0.85": round(sum((min(p[:2]), max(p[:2])) in found for p in hi) / max(len(hi), 1), 4)}


def ours_on(spark, texts, pairs, workdir: Path, threshold: float, name: str, overrides=()) -> dict:
    metrics, removed, secs = run_ours(spark, dedup_table(texts), workdir, name,
                                      [f"dedup.near.threshold={threshold}", *overrides])
    ids = [content_id(t, "") for t in texts]
    comp = {r["source_row"]: r["duplicate_of"] for r in removed}
    hi = [p for p in pairs if p[3] >= 0.85]
    same = sum(comp.get(p[0], ids[p[0]]) == comp.get(p[1], ids[p[1]]) for p in hi)
    return {"docs": len(texts), "seconds": round(secs, 2), "docs_per_s": round(len(texts) / secs, 1),
            "removed": len(removed), "recall_jaccard_ge_0.85": round(same / max(len(hi), 1), 4),
            "planted_pairs_ge_0.85": len(hi), "phase_seconds": metrics["phase_seconds"]}


def compare_mllib(spark, texts, pairs, work: Path, args) -> dict:
    """Ours and MLlib (each ``--mllib-tables`` setting) alternately, ``--rounds`` times after one
    warm-up run of each, in this one Spark session: per method the best and median seconds, and the speed-ups at equal or
    better recall (ours' recall >= MLlib's) from the best and from the median runs."""
    import statistics

    # warm-up, not counted: Python workers, imports and the JVM's JIT for both
    warmup = {"ours": ours_on(spark, texts, pairs, work, args.threshold, "warmup", args.set),
              "mllib_1_table": mllib(spark, texts, pairs, 1, args.threshold)}
    log("warm-up", warmup)
    runs: dict[str, list[dict]] = {"ours": []}
    settings = [int(x) for x in args.mllib_tables.split(",")]
    for r in range(args.rounds):
        runs["ours"].append(ours_on(spark, texts, pairs, work, args.threshold, f"cmp{r}", args.set))
        log(f"round {r} ours", runs["ours"][-1])
        for tables in settings:
            runs.setdefault(f"mllib_{tables}_tables", []).append(mllib(spark, texts, pairs, tables, args.threshold))
            log(f"round {r} mllib", runs[f"mllib_{tables}_tables"][-1])
    out: dict = {"warmup_not_counted": warmup}
    for name, rs in runs.items():
        secs = [x["seconds"] for x in rs]
        out[name] = {"seconds_per_round": secs, "best_seconds": min(secs), "median_seconds": statistics.median(secs),
                     "docs_per_s_best": round(len(texts) / min(secs), 1),
                     "recall_jaccard_ge_0.85": rs[0]["recall_jaccard_ge_0.85"],
                     **{k: v for k, v in rs[0].items() if k in ("num_hash_tables", "pairs_found", "removed")}}
    ours = out["ours"]
    out["speedup_vs_mllib"] = {
        name: {"ours_recall_at_least_mllib": ours["recall_jaccard_ge_0.85"] >= m["recall_jaccard_ge_0.85"],
               "best": round(m["best_seconds"] / ours["best_seconds"], 2),
               "median": round(m["median_seconds"] / ours["median_seconds"], 2)}
        for name, m in out.items() if name.startswith("mllib_")}
    return out


def datasketch_run(texts, pairs, threshold: float) -> dict:
    from datasketch import MinHash, MinHashLSH

    b, r = bands_rows(threshold, 128)
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128, params=(b, r))
    cands = set()
    for i, t in enumerate(texts):
        m = MinHash(num_perm=128)
        sh = _shingle_strings(t)
        if not sh:
            continue
        m.update_batch([s.encode("utf-8") for s in sh])
        for j in lsh.query(m):
            cands.add((j, i))
        lsh.insert(i, m)
    secs = time.perf_counter() - t0
    hi = [p for p in pairs if p[3] >= 0.85]
    return {"bands_rows": [b, r], "docs": len(texts), "seconds": round(secs, 2),
            "docs_per_s": round(len(texts) / secs, 1), "candidate_pairs": len(cands),
            "candidate_recall_jaccard_ge_0.85": round(sum((min(p[:2]), max(p[:2])) in cands for p in hi)
                                                      / max(len(hi), 1), 4),
            "note": "single process; MinHash + LSH query/insert only, no verification"}


# ----------------------------------------------------------------------------- the whole stage
def stage(spark, corpus: dict, workdir: Path) -> dict:
    from selectllm.dedup.stage import run_stage
    from selectllm.pipeline import stage_context
    from selectllm.rundir import RunDir

    files = []
    texts = corpus["texts"]
    per = (len(texts) + 7) // 8
    for k in range(8):
        f = workdir / f"in-{k}.jsonl"
        with f.open("w") as fh:
            for t in texts[k * per:(k + 1) * per]:
                fh.write(json.dumps({"instruction": t, "input": ""}) + "\n")
        files.append(str(f))
    out = {}
    for near in (False, True):
        cfg = load_config(None, ["input.paths=[" + ", ".join(files) + "]", f"dedup.near.enabled={str(near).lower()}"])
        run = RunDir(str(workdir / f"run-{near}"))
        ctx = stage_context(cfg, run, "dedup")
        t = time.perf_counter()
        counts = run_stage(ctx)
        secs = time.perf_counter() - t
        out["near_on" if near else "near_off"] = {
            "seconds": round(secs, 2), "docs_per_s": round(len(texts) / secs, 1), "kept": counts["kept"],
            "near_duplicates": counts["near_duplicates"]}
    out["near_marginal_seconds"] = round(out["near_on"]["seconds"] - out["near_off"]["seconds"], 2)
    return out


# ----------------------------------------------------------------------------- robustness
def robust(spark, corpus: dict, workdir: Path, scale: float) -> dict:
    from _data import load_records

    rng = random.Random(11)
    vocab = sorted({w for t in corpus["texts"][:5000] for w in t.split()})
    res = {}

    def case(name: str, texts: list[str], note: str, overrides=()) -> None:
        m, removed, secs = run_ours(spark, dedup_table(texts, source=f"{name}.jsonl"), workdir, name, overrides)
        m.pop("phase_seconds", None)
        res[name] = {"rows": len(texts), "seconds": round(secs, 2), "note": note, **m}
        log(name, res[name])

    n = int(20000 * scale)
    case("all_identical", ["tell me a joke about cats and dogs"] * n,
         "one giant component (exact dedup off); giant buckets become stars")
    tool = [shingle_text(r["instruction"], r["input"]) for r in load_records(files=["gpteacher_toolformer.jsonl"])]
    case("toolformer_real", tool, "real rows sharing long tool-description preambles")
    pre = " ".join(rng.choice(vocab) for _ in range(300))
    case("preamble_near_identical", [f"{pre} {' '.join(rng.choice(vocab) for _ in range(10))}" for _ in range(n // 4)],
         "300-word shared preamble + 10 distinct words (Jaccard ~0.94: all near duplicates)")
    pre = " ".join(rng.choice(vocab) for _ in range(60))
    case("preamble_below_threshold", [f"{pre} {' '.join(rng.choice(vocab) for _ in range(40))}" for _ in range(n // 4)],
         "60-word shared preamble + 40 distinct words (Jaccard ~0.4: none are duplicates)")
    mb = []
    for _ in range(10):
        words = [rng.choice(vocab) for _ in range(150_000)]
        mb.append(" ".join(words))
        mb.append(" ".join(_edit(rng, words, 0.001, vocab)))
    mb += [" ".join(rng.choice(vocab) for _ in range(150_000)) for _ in range(10)]
    case("megabyte_rows", mb, f"30 rows of ~{sum(map(len, mb)) // len(mb) // 1000} kB: 10 pairs at 0.1% edits + 10 unique")
    empty = [""] * (n // 2) + [" ".join(rng.choice(vocab) for _ in range(20)) for _ in range(n // 2)]
    case("empty_after_normalization", empty, "half the rows have no token (no shingles, never duplicates)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--planted", type=int, default=5000)
    ap.add_argument("--subset", type=int, default=0,
                    help="rows for the MLlib / datasketch comparison (0: the whole corpus)")
    ap.add_argument("--mllib-tables", default="1,2,3")
    ap.add_argument("--rounds", type=int, default=2,
                    help="comparison rounds: ours and each MLlib setting alternately, in one session")
    ap.add_argument("--max-bucket-also", type=int, default=0,
                    help="also run the quality section with this dedup.near.max_bucket")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--robust-scale", type=float, default=1.0)
    ap.add_argument("--sections", default="quality,mllib,datasketch,stage,robust")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", default="8")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for our runs, e.g. --set dedup.near.bands=18 (repeatable)")
    ap.add_argument("--out")
    args = ap.parse_args()
    sections = set(args.sections.split(","))

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(args.master).appName("bench-near")
             .config("spark.sql.shuffle.partitions", args.shuffle_partitions).config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.driver.memory", "6g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t = time.perf_counter()
    corpus = build_corpus(args.n, args.planted)
    log(f"corpus: {len(corpus['texts'])} rows ({corpus['real']} real, {len(corpus['pairs'])} planted) "
        f"in {time.perf_counter() - t:.1f}s")
    result: dict = {"master": args.master, "threshold": args.threshold, "overrides": args.set, "cores": os.cpu_count(),
                    "load_avg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "quality" in sections:
            result["quality"] = quality(spark, corpus, work, args.threshold, args.set)
            log("quality", json.dumps({k: v for k, v in result["quality"].items() if k != "recall_curve"}))
        if args.max_bucket_also and "quality" in sections:
            q = quality(spark, corpus, work, args.threshold, [*args.set, f"dedup.near.max_bucket={args.max_bucket_also}"])
            result[f"quality_max_bucket_{args.max_bucket_also}"] = {
                k: v for k, v in q.items() if k not in ("recall_curve", "removed_by_origin")}
            log("quality max_bucket", json.dumps(result[f"quality_max_bucket_{args.max_bucket_also}"]))
        if sections & {"mllib", "datasketch"}:
            if args.subset and args.subset < len(corpus["texts"]):
                texts, pairs = subset_of(corpus, args.subset)
            else:
                texts, pairs = corpus["texts"], corpus["pairs"]
            cmp: dict = {}
            if "datasketch" in sections:
                cmp["datasketch"] = datasketch_run(texts, pairs, args.threshold)
                log("datasketch", cmp["datasketch"])
            if "mllib" in sections:
                cmp.update(compare_mllib(spark, texts, pairs, work, args))
            result["comparison"] = cmp
        if "stage" in sections:
            result["stage"] = stage(spark, corpus, work)
            log("stage", result["stage"])
        if "robust" in sections:
            result["robust"] = robust(spark, corpus, work, args.robust_scale)
    result["load_avg_end"] = os.getloadavg()[0]
    spark.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
