"""The simulator's Batch API: ``/v1/files`` and ``/v1/batches`` (a batch completes
``batch_delay_s`` after creation; its lines go through the chat logic of :class:`SimState`,
skipping latency and rate limits)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid

from aiohttp import web

from selectllm.llm.simulator.chat import STATE, SimState, _authorized, _err_body, _error, _Outcome, _unauthorized

# ---- files + batches


def _handler(fn):
    """A route of the Batch API: 401 without a key, else ``fn(request, state)``."""

    async def route(request: web.Request) -> web.Response:
        if not _authorized(request):
            return _unauthorized()
        return await fn(request, request.app[STATE])

    route.__name__ = fn.__name__
    return route


def _found(objects: dict, key: str, kind: str) -> tuple[dict | None, web.Response | None]:
    """``objects[key]``, or the 404 the API answers for a missing ``kind`` (File, Batch)."""
    obj = objects.get(key)
    return obj, (None if obj is not None else
                 _error(404, f"No such {kind} object", "invalid_request_error", code="not_found"))


def _file_obj(fid: str, f: dict) -> dict:
    return {"id": fid, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
            "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}


@_handler
async def upload_file(request: web.Request, st: SimState) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        return _error(400, "expected a multipart/form-data upload", "invalid_request_error")
    purpose, data, filename = None, None, "upload.jsonl"
    reader = await request.multipart()
    async for part in reader:
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or filename
            data = await part.read(decode=False)
    if data is None:
        return _error(400, "missing 'file' part", "invalid_request_error", param="file")
    if purpose not in ("batch", "batch_output"):
        return _error(400, f"unsupported purpose {purpose!r} (this simulator takes 'batch')",
                      "invalid_request_error", param="purpose")
    fid = f"file-{uuid.uuid4().hex[:24]}"
    st.files[fid] = {"data": bytes(data), "filename": filename, "purpose": purpose,
                     "created_at": int(time.time())}
    st.log({"ts": round(time.time(), 6), "path": request.path, "status": 200, "file_id": fid,
            "bytes": len(data)})
    return web.json_response(_file_obj(fid, st.files[fid]))


@_handler
async def get_file(request: web.Request, st: SimState) -> web.Response:
    f, missing = _found(st.files, request.match_info["fid"], "File")
    return missing or web.json_response(_file_obj(request.match_info["fid"], f))


@_handler
async def get_file_content(request: web.Request, st: SimState) -> web.Response:
    f, missing = _found(st.files, request.match_info["fid"], "File")
    return missing or web.Response(body=f["data"], content_type="application/octet-stream")


def _run_batch(st: SimState, bid: str) -> None:
    b = st.batches[bid]
    if b["status"] not in ("validating", "in_progress"):
        return
    b["status"] = "in_progress"
    b["in_progress_at"] = int(time.time())
    data = st.files[b["input_file_id"]]["data"]
    out_lines, err_lines = [], []
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines()):
        if not line.strip():
            continue
        custom_id = None
        try:
            item = json.loads(line)
            custom_id = item.get("custom_id")
            body = item["body"]
            raw = json.dumps(body, sort_keys=True).encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            err_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
                              "response": None, "error": {"code": "invalid_json_line",
                                                          "message": f"line {i + 1} is not a valid request"}})
            continue
        body_sha = hashlib.sha256(raw).hexdigest()
        err, prompt, max_tokens = st.validate(body)
        if err is None:
            attempt = st.attempts.get(body_sha, 0)
            st.attempts[body_sha] = attempt + 1
            status = st.is_error(body_sha, attempt)
            if status:
                err = _Outcome(status, _err_body("The server had an error while processing your request "
                                                 "(simulated).", "server_error"))
            else:
                out = st.answer(body, body_sha, attempt, prompt, max_tokens)
        req_id = f"req_{uuid.uuid4().hex[:24]}"
        st.stats["batch"]["lines"] += 1
        if err is not None:
            err_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
                              "response": {"status_code": err.status, "request_id": req_id, "body": err.body},
                              "error": None})
            continue
        st.stats["batch"]["prompt_tokens"] += out.prompt_tokens
        st.stats["batch"]["completion_tokens"] += out.completion_tokens
        st.stats["prompt_tokens"] += out.prompt_tokens
        st.stats["completion_tokens"] += out.completion_tokens
        st.stats["malformed"] += int(out.malformed)
        out_lines.append({"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
                          "response": {"status_code": 200, "request_id": req_id, "body": out.body},
                          "error": None})
        st.log({"ts": round(time.time(), 6), "path": "batch", "batch_id": bid, "custom_id": custom_id,
                "status": 200, "body_sha256": body_sha[:16], "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens})

    def store(lines: list[dict], name: str) -> str | None:
        if not lines:
            return None
        fid = f"file-{uuid.uuid4().hex[:24]}"
        payload = "".join(json.dumps(x) + "\n" for x in lines).encode()
        st.files[fid] = {"data": payload, "filename": name, "purpose": "batch_output",
                         "created_at": int(time.time())}
        return fid

    b["output_file_id"] = store(out_lines, f"{bid}_output.jsonl")
    b["error_file_id"] = store(err_lines, f"{bid}_error.jsonl")
    b["request_counts"] = {"total": len(out_lines) + len(err_lines), "completed": len(out_lines),
                           "failed": len(err_lines)}
    b["status"] = "completed"
    b["completed_at"] = int(time.time())


@_handler
async def create_batch(request: web.Request, st: SimState) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    fid = body.get("input_file_id") if isinstance(body, dict) else None
    if fid not in st.files:
        return _error(400, f"input_file_id {fid!r} not found", "invalid_request_error", param="input_file_id")
    endpoint = body.get("endpoint", "/v1/chat/completions")
    if endpoint != "/v1/chat/completions":
        return _error(400, f"unsupported endpoint {endpoint!r}", "invalid_request_error", param="endpoint")
    bid = f"batch_{uuid.uuid4().hex[:24]}"
    now = int(time.time())
    st.batches[bid] = {
        "id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
        "completion_window": body.get("completion_window", "24h"), "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    st.stats["batch"]["batches"] += 1
    asyncio.get_running_loop().call_later(st.batch_delay_s, _run_batch, st, bid)
    st.log({"ts": round(time.time(), 6), "path": request.path, "status": 200, "batch_id": bid})
    return web.json_response(st.batches[bid])


@_handler
async def get_batch(request: web.Request, st: SimState) -> web.Response:
    b, missing = _found(st.batches, request.match_info["bid"], "Batch")
    return missing or web.json_response(b)


@_handler
async def list_batches(request: web.Request, st: SimState) -> web.Response:
    data = sorted(st.batches.values(), key=lambda b: b["created_at"], reverse=True)
    return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": False})


@_handler
async def cancel_batch(request: web.Request, st: SimState) -> web.Response:
    b, missing = _found(st.batches, request.match_info["bid"], "Batch")
    if missing:
        return missing
    if b["status"] in ("validating", "in_progress"):
        b["status"] = "cancelled"
        b["cancelled_at"] = int(time.time())
    return web.json_response(b)
