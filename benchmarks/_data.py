"""Real instructions from ../shared/data for benchmarks (never copied into the repository)."""

from __future__ import annotations

import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["alpaca_subsets.jsonl", "dolly_subsets.jsonl", "code_alpaca_2k.jsonl", "gpteacher_codegen.jsonl",
         "gsm8k_train.jsonl", "gpteacher_roleplay.jsonl", "self_instruct_user_oriented.jsonl",
         "gpteacher_toolformer.jsonl", "flan_cot.jsonl"]


def load_records(limit: int | None = None, files: list[str] | None = None) -> list[dict]:
    """Records {instruction, input, source} from the shared corpora, interleaved file by file."""
    if not SHARED.is_dir():
        raise SystemExit(f"benchmark needs {SHARED} (the shared data folder)")
    per_file = []
    for name in files or FILES:
        with (SHARED / name).open(encoding="utf-8") as f:
            per_file.append([json.loads(line) for line in f if line.strip()])
    out: list[dict] = []
    i = 0
    while any(i < len(rows) for rows in per_file) and (limit is None or len(out) < limit):
        for rows in per_file:
            if i < len(rows) and (limit is None or len(out) < limit):
                r = rows[i]
                out.append({"instruction": r["instruction"], "input": r.get("input") or "", "source": r.get("source", "")})
        i += 1
    return out


def distinct_shingle_texts() -> tuple[list[str], list[str]]:
    """Every distinct real row in the id's form (:func:`selectllm.text.minhash.shingle_text`), file
    by file, with the name of the corpus it came from (for per-corpus counts)."""
    from selectllm.text.minhash import shingle_text

    texts, origin, seen = [], [], set()
    for name in FILES:
        for r in load_records(files=[name]):
            t = shingle_text(r["instruction"], r["input"])
            if t and t not in seen:
                seen.add(t)
                texts.append(t)
                origin.append(name.split(".")[0])
    return texts, origin


def bench_corpus(run_dir: str | None, prefix: str, rows: int) -> tuple[Path, Path]:
    """A benchmark's work folder (``run_dir``, or a new temporary one named ``prefix``...) and in
    it ``corpus-<rows>.jsonl``: the first ``rows`` records of :func:`load_records` (written once, so
    a reused folder keeps its corpus and its complete stages)."""
    import tempfile

    work = Path(run_dir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{rows}.jsonl"
    if not corpus.exists():
        with corpus.open("w", encoding="utf-8") as f:
            for r in load_records(rows):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return work, corpus
