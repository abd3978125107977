"""`selectllm run` with `llm.provider: openai` against an OpenAI-compatible server written here
(not the project's simulator): it rejects json_schema with a FastAPI-style 422, answers plain
text like `[2]`, rate-limits with 429 + retry-after, and wants the API key, which lives only in
the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import small_corpus


ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-e2e-" + uuid.uuid4().hex
CANDIDATE = re.compile(r'<candidate id="(\d+)">(.*?)</candidate>', re.S)
PICKS = re.compile(r"[Ss]elect exactly (\d+)")

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


class CompatServer:
    """A small OpenAI-compatible chat endpoint: picks the longest candidates, answers `[i]` text.

    Every request is counted; those with a json_schema response_format get 422 (not billed); every
    4th other one gets 429 with retry-after: 1; a request without the right bearer key gets 401.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "422": 0, "429": 0, "401": 0, "200": 0, "json_schema_asked": 0}
        self.answers: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with server.lock:
                    server.counts["requests"] += 1
                    n = server.counts["requests"]
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"detail": "Not Found"})
                if self.headers.get("authorization") != f"Bearer {API_KEY}":
                    server.bump("401")
                    return self.reply(401, {"detail": "bad key"})
                rf = body.get("response_format")
                if isinstance(rf, dict) and rf.get("type") == "json_schema":
                    server.bump("422")
                    server.bump("json_schema_asked")
                    return self.reply(422, {"detail": [{"loc": ["body", "response_format"], "type": "value_error",
                                                        "msg": "Value error, json_schema is not supported"}]})
                if n % 4 == 0:
                    server.bump("429")
                    return self.reply(429, {"detail": "slow down"}, {"retry-after": "1"})
                text = body["messages"][-1]["content"]
                cands = [(int(i), len(t)) for i, t in CANDIDATE.findall(text)]
                m = PICKS.search(text)
                k = int(m.group(1)) if m else 1
                best = sorted(cands, key=lambda c: (-c[1], c[0]))[:k]
                answer = ", ".join(f"[{i}]" for i, _ in best)
                with server.lock:
                    server.counts["200"] += 1
                    server.answers.append(answer)
                self.reply(200, {
                    "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": 3,
                              "total_tokens": len(text) // 4 + 3}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def bump(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_run_with_provider_openai_against_a_compatible_server(tmp_path):
    corpus = small_corpus(tmp_path / "corpus.jsonl", good=80)
    run = tmp_path / "run"
    server = CompatServer()
    try:
        cfg = {
            "run_dir": str(run),
            "input": {"paths": [str(corpus)], "preset": "alpaca"},
            "embed": {"batch_size": 32},
            "select": {"strategy": "selectllm", "budget": 8, "candidates_per_prompt": 5},
            "llm": {"provider": "openai", "base_url": server.base_url, "model": "any-model",
                    "api_key_env": "E2E_LLM_KEY", "engine": "local", "concurrency": 2, "max_usd": 1.0},
            "ray": {"num_cpus": 2},
        }
        (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
        env = {**os.environ, "E2E_LLM_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "selectllm.cli", "run", str(tmp_path / "cfg.yaml")],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr[-4000:]

    decisions = pq.read_table(run / "select" / "decisions.parquet").to_pylist()
    asked = [d for d in decisions if "no LLM call" not in d["reason"]]
    assert asked and all(d["status"] == "ok" for d in decisions)
    c = server.counts
    # json_schema probed once, rejected with 422; json_object forms answered in text; then the text form
    assert c["json_schema_asked"] == 1 and c["422"] == 1 and c["401"] == 0
    assert c["429"] >= 1 and c["200"] == len(asked)  # rate-limited requests retried, each group paid once
    # the server's plain-text answers picked the rows
    for d in asked:
        assert len(d["chosen_ids"]) == 1 and d["chosen_ids"][0] in d["candidate_ids"]
    selected = [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 8 and len({s["id"] for s in selected}) == 8

    entry = json.loads((run / "manifest.json").read_text())["stages"]["select"]
    assert entry["counts"]["structured_output"] == "text"  # json_schema rejected, the json_object forms ignored
    assert "json_schema: HTTP 422" in entry["counts"]["structured_output_fallback"]
    assert "structured output text (after json_schema: HTTP 422" in out.stdout + out.stderr

    # the key: in the environment only
    assert API_KEY not in out.stdout + out.stderr
    for p in run.rglob("*"):
        if p.is_file():
            assert API_KEY.encode() not in p.read_bytes(), p
