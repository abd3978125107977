"""No planted value leaves for the LLM or lands in the run directory, end to end: `selectllm run`
with `llm.provider: openai` against a server written here that records every request body (chat
completions and Batch API uploads), on chat records with personal data and secrets in the system
prompt, the user turns and tool-call arguments, an `input.keep` column, then `selectllm compare`
through the Batch API and `selectllm estimate`.  Every file of the run directory is read back
(Parquet decompressed); only selected.jsonl files hold source text, because
`privacy.output: original` asks for it."""

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

import pytest

from helpers import PLANTED, ROOT, file_texts, fragments, planted_values

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]
API_KEY = "sk-e2e-" + uuid.uuid4().hex
CANDIDATE = re.compile(r'<candidate id="(\d+)">', re.S)


class RecordingServer:
    """OpenAI-compatible: chat completions (answers the first candidate; the first request gets a
    400 whose message quotes the prompt back, as some servers do), files and batches (a batch completes at
    once).  Keeps every request body and every uploaded file."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.files: dict[str, str] = {}
        self.batches: dict[str, dict] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status: int, body, ctype: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/v1/batches":
                    return self.reply(200, {"object": "list", "data": list(server.batches.values()), "has_more": False})
                m = re.fullmatch(r"/v1/batches/([\w-]+)", path)
                if m and m.group(1) in server.batches:
                    return self.reply(200, server.batches[m.group(1)])
                m = re.fullmatch(r"/v1/files/([\w-]+)(/content)?", path)
                if m and m.group(1) in server.files:
                    if m.group(2):
                        return self.reply(200, server.files[m.group(1)], "application/jsonl")
                    return self.reply(200, {"id": m.group(1), "object": "file", "purpose": "batch", "bytes": 1,
                                            "created_at": 0, "filename": "f.jsonl", "status": "processed"})
                self.reply(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                text = raw.decode("utf-8", "replace")
                with server.lock:
                    server.bodies.append(text)
                    n = len(server.bodies)
                if self.headers.get("authorization") != f"Bearer {API_KEY}":
                    return self.reply(401, {"error": {"message": "bad key"}})
                if self.path == "/v1/chat/completions":
                    body = json.loads(raw)
                    prompt = body["messages"][-1]["content"]
                    if n == 1:  # an error whose text quotes the prompt (not retried): it goes to requests.jsonl
                        return self.reply(400, {"error": {"message": "cannot read this prompt: " + prompt[-300:]}})
                    return self.reply(200, server.completion(prompt))
                if self.path == "/v1/files":
                    fid = f"file-{uuid.uuid4().hex[:12]}"
                    lines = []  # the uploaded JSONL, out of the multipart body
                    for line in text.splitlines():
                        try:
                            item = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(item, dict) and "custom_id" in item:
                            lines.append(line)
                    content = "\n".join(lines) + "\n"
                    server.files[fid] = content
                    return self.reply(200, {"id": fid, "object": "file", "purpose": "batch", "bytes": len(content),
                                            "created_at": 0, "filename": "in.jsonl", "status": "processed"})
                if self.path == "/v1/batches":
                    body = json.loads(raw)
                    out = []
                    for line in server.files[body["input_file_id"]].strip().splitlines():
                        item = json.loads(line)
                        prompt = item["body"]["messages"][-1]["content"]
                        out.append(json.dumps({"id": "r", "custom_id": item["custom_id"],
                                               "response": {"status_code": 200, "body": server.completion(prompt)}}))
                    ofid = f"file-{uuid.uuid4().hex[:12]}"
                    server.files[ofid] = "\n".join(out) + "\n"
                    bid = f"batch_{uuid.uuid4().hex[:12]}"
                    server.batches[bid] = {
                        "id": bid, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
                        "completion_window": "24h", "status": "completed", "output_file_id": ofid,
                        "error_file_id": None, "created_at": 0, "completed_at": 1, "metadata": body.get("metadata"),
                        "request_counts": {"total": len(out), "completed": len(out), "failed": 0}}
                    return self.reply(200, server.batches[bid])
                self.reply(404, {"error": {"message": "not found"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def completion(prompt: str) -> dict:
        ids = CANDIDATE.findall(prompt) or ["1"]
        answer = f"[{ids[0]}]" if "<candidate" in prompt else "Score: 4"
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 2, "total_tokens": len(prompt) // 4 + 2}}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _chat_records(n: int) -> list[dict]:
    values = planted_values()
    topics = ["rivers", "tax forms", "a birthday party", "sorting in Python", "bread", "chess openings",
              "the moon", "a job interview", "SQL joins", "gardening", "jazz", "a broken bike"]
    out = []
    for i in range(n):
        a, b, c = values[i % len(values)], values[(i + 7) % len(values)], values[(i + 13) % len(values)]
        out.append({
            "customer": f"account {values[(i + 3) % len(values)]}",
            "messages": [
                {"role": "system", "content": f"You are the support bot of {a}."},
                {"role": "user", "content": f"Question {i} about {topics[i % len(topics)]}: my details are {b}."},
                {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function", "function": {
                    "name": "lookup", "arguments": json.dumps({"key": c, "n": i})}}]},
                {"role": "tool", "content": "ok"},
                {"role": "user", "content": f"Now explain {topics[(i * 5) % len(topics)]} step by step ({i})."},
            ]})
    return out


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "selectllm.cli", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def _leaked(text: str, values: list[str]) -> list[str]:
    return [p for v in values for p in {v, *fragments(v)} if p in text or json.dumps(p)[1:-1] in text]


def test_no_planted_value_reaches_the_llm_or_the_run_dir(tmp_path):
    corpus = tmp_path / "chats.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in _chat_records(30)))
    run = tmp_path / "run"
    server = RecordingServer()
    values = planted_values()
    try:
        cfg = {
            "run_dir": str(run),
            "input": {"paths": [str(corpus)], "preset": "openai", "turn": "each", "keep": ["customer"]},
            "dedup": {"near": {"enabled": False}},
            "embed": {"batch_size": 32},
            "select": {"strategy": "selectllm", "budget": 4, "candidates_per_prompt": 4},
            "llm": {"provider": "openai", "base_url": server.base_url, "model": "m", "api_key_env": "E2E_LLM_KEY",
                    "engine": "local", "concurrency": 2, "max_usd": 1.0, "structured_output": "off",
                    "batch_poll_s": 0.2},
            "privacy": {"output": "original"},
            "ray": {"num_cpus": 2},
        }
        (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
        env = {**os.environ, "E2E_LLM_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
        outs = [_cli(["run", str(tmp_path / "cfg.yaml")], env, tmp_path)]
        outs.append(_cli(["compare", str(tmp_path / "cfg.yaml"), "--strategies", "selectllm,alpagasus,random",
                          "--set", "llm.mode=batch"], env, tmp_path))
        outs.append(_cli(["estimate", str(tmp_path / "cfg.yaml")], env, tmp_path))
    finally:
        server.stop()

    # the LLM saw placeholders only: online requests, the uploaded batch file, and what it answered
    assert len(server.bodies) >= 3 and server.files
    traffic = "\n".join(server.bodies) + "\n".join(server.files.values())
    assert "<EMAIL_" in traffic and "<SECRET_" in traffic and "[tool call] lookup(" in traffic
    assert _leaked(traffic, values) == []
    # the CLI's output and logs
    assert _leaked("\n".join(o.stdout + o.stderr for o in outs), values) == []
    # every file of the run directory but the selected.jsonl files (source text, as asked)
    texts = file_texts(run)
    selected = {p: t for p, t in texts.items() if p.endswith("selected.jsonl")}
    assert len(selected) == 4  # the run's and each compared strategy's
    leaks = {p: _leaked(t, values) for p, t in texts.items() if p not in selected}
    assert {p: v for p, v in leaks.items() if v} == {}
    # the server's error text quoting a prompt was recorded (and held placeholders only)
    assert "cannot read this prompt" in (run / "select" / "requests.jsonl").read_text()
    # selected.jsonl: the source text, exactly, with the kept column
    rows = [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]
    source = _chat_records(30)
    for r in rows:
        rec = source[r["source_row"]]
        user_turns = [m["content"] for m in rec["messages"] if m["role"] == "user"]
        assert r["instruction"] == user_turns[r["user_turn"]] and r["customer"] == rec["customer"]
    assert any(_leaked(json.dumps(r), values) for r in rows)
    report = (run / "report.html").read_text()
    assert 'id="privacy"' in report
