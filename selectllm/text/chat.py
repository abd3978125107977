"""Chat transcripts as instruction rows: the ``openai``, ``sharegpt`` and ``lmsys`` presets.  Pure Python.

A chat record holds a list of turns under the preset's key (``openai``: ``messages`` with
``role``/``content``; ``sharegpt``: ``conversations`` with ``from``/``value``; ``lmsys``:
``conversation`` with ``role``/``content``, as LMSYS-Chat-1M and WildChat-1M rows).  A turn may
use either key pair (``from``/``value`` or ``role``/``content``).  A top-level ``system`` field
(ShareGPT, Anthropic style) is the first system turn.

* **Roles** are normalized (case-insensitive): ``human`` -> ``user``; ``gpt``, ``chatgpt``,
  ``bing``, ``bard``, ``model`` -> ``assistant``; ``developer`` -> ``system``.  The tool roles
  ``tool``, ``function``, ``function_call``, ``observation``, ``ipython`` keep their own name:
  they are context, never the instruction.  Any other role is ``malformed_turn``.
* **Content** is a string, ``null`` (no text, e.g. an assistant turn that only calls tools) or a
  list of parts: text parts (``{"type": "text" | "input_text" | "output_text", "text"}``,
  ``refusal``, or a bare string) are joined with a newline; every other part (``image_url``,
  ``input_audio``, ``file``, ``tool_use``, ...) is not text: it is counted in ``media_parts``,
  never embedded.  An assistant turn's ``tool_calls`` / ``function_call`` are written into the
  context as ``[tool call] name(arguments)`` lines.
* **Which user turn is the instruction** (``input.turn``): ``first``, ``last``, or ``each`` (one
  row per user turn).  A row's ``input`` is its *context*: the system prompt(s) and every turn
  before its user turn, one paragraph per turn, ``Role: text`` (``System:``, ``User:``,
  ``Assistant:``, ``Tool:``, ``Function call:``, ...), paragraphs separated by a blank line.
  Turns after the instruction (the answer) are not part of the row.
* ``user_turn``: the 0-based ordinal of the row's user turn among the record's user turns (the
  same turn has the same number under ``first``, ``last`` and ``each``).  ``(source,
  source_row, user_turn)`` names a row; rows of one record also have different ids, since each
  later row's context holds the earlier turns.
* ``media_parts``: the non-text parts in the row's turns (system, context and its user turn).
* **Quarantine**: no user turn -> ``no_user_turn``; the turn list not a list, a turn not an
  object, no role or an unknown one, no content (and no tool call), content or a text part of a
  wrong type -> ``malformed_turn``; a top-level ``system`` that is not text -> ``wrong_type``;
  the turn list missing or ``null`` -> ``missing_field``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TURNS = ("first", "last", "each")
# preset -> (record key of the turn list, role key, content key)
CHAT_PRESETS = {
    "openai": ("messages", "role", "content"),
    "sharegpt": ("conversations", "from", "value"),
    "lmsys": ("conversation", "role", "content"),
}
TOOL_ROLES = ("tool", "function", "function_call", "observation", "ipython")
ROLES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant",
    "system": "system", "developer": "system",
    **{r: r for r in TOOL_ROLES},
}
LABELS = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool",
          "function": "Function", "function_call": "Function call", "observation": "Observation",
          "ipython": "IPython"}
TEXT_PARTS = ("text", "input_text", "output_text")
_ALT = {"from": "role", "role": "from", "value": "content", "content": "value"}


class ChatError(Exception):
    """A record that is quarantined as a whole; ``args[0]`` is the reason."""


class NotText(Exception):
    """A text value of a wrong type."""


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    media: int


@dataclass(frozen=True)
class ChatRow:
    instruction: str
    context: str
    user_turn: int
    media_parts: int


def text_value(v: Any) -> str:
    """A text field's value: a string, bytes (strict UTF-8, UnicodeDecodeError otherwise) or None
    (``""``); anything else raises :class:`NotText`."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8")
    raise NotText(type(v).__name__)


def content_text(content: Any) -> tuple[str, int]:
    """(text, non-text parts) of a turn's content; NotText when it is of a wrong type."""
    if not isinstance(content, (list, tuple)):
        return text_value(content), 0
    texts, media = [], 0
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif not isinstance(part, dict):
            raise NotText(f"content part {type(part).__name__}")
        elif part.get("type") in TEXT_PARTS or (part.get("type") is None and "text" in part):
            texts.append(text_value(part.get("text")))
        elif part.get("type") == "refusal":
            texts.append(text_value(part.get("refusal")))
        else:
            media += 1
    return "\n".join(t for t in texts if t), media


def _tool_calls(turn: dict) -> str:
    """``[tool call] name(arguments)`` lines for an assistant turn's tool_calls / function_call."""
    calls = turn.get("tool_calls") or ([turn["function_call"]] if turn.get("function_call") else [])
    if not isinstance(calls, list):
        calls = [calls]
    lines = []
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else call
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            args = fn.get("arguments")
            args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, default=str)
            lines.append(f"[tool call] {fn['name']}({args})")
        else:
            lines.append(f"[tool call] {json.dumps(fn, ensure_ascii=False, default=str)}")
    return "\n".join(lines)


def _get(turn: dict, key: str) -> tuple[bool, Any]:
    """(present, value) of ``key`` or its alternative (from/role, value/content); a key whose value
    is null counts as absent when the other one has a value (Parquet structs hold both)."""
    for k in (key, _ALT[key]):
        if turn.get(k) is not None:
            return True, turn[k]
    return key in turn or _ALT[key] in turn, None


def parse_turns(record: dict, preset: str) -> list[Turn]:
    """The record's turns, a top-level ``system`` first; ChatError(reason) for a bad record."""
    key, who, what = CHAT_PRESETS[preset]
    conv = record.get(key)
    if conv is None:
        raise ChatError("missing_field")
    if not isinstance(conv, (list, tuple)):
        raise ChatError("malformed_turn")
    turns = []
    system = record.get("system")
    if system is not None:
        try:
            text, media = content_text(system)
        except (NotText, UnicodeDecodeError):
            raise ChatError("wrong_type") from None
        turns.append(Turn("system", text, media))
    for t in conv:
        if not isinstance(t, dict):
            raise ChatError("malformed_turn")
        _, speaker = _get(t, who)
        role = ROLES.get(speaker.strip().lower()) if isinstance(speaker, str) else None
        if role is None:
            raise ChatError("malformed_turn")
        has_content, content = _get(t, what)
        calls = _tool_calls(t) if role == "assistant" and (t.get("tool_calls") or t.get("function_call")) else ""
        if not has_content and not calls:
            raise ChatError("malformed_turn")
        try:
            text, media = content_text(content)
        except NotText:
            raise ChatError("malformed_turn") from None
        except UnicodeDecodeError:
            raise ChatError("bad_encoding") from None
        turns.append(Turn(role, "\n".join(x for x in (text, calls) if x), media))
    return turns


def layout(turns: list[Turn]) -> str:
    """The context of a row: ``Role: text`` paragraphs separated by a blank line."""
    return "\n\n".join(f"{LABELS[t.role]}: {t.text}".rstrip() for t in turns)


def chat_rows(record: dict, preset: str, turn: str = "first") -> list[ChatRow]:
    """The rows of one chat record for ``input.turn`` (see the module doc); ChatError(reason)."""
    turns = parse_turns(record, preset)
    users = [i for i, t in enumerate(turns) if t.role == "user"]
    if not users:
        raise ChatError("no_user_turn")
    picked = {"first": [0], "last": [len(users) - 1], "each": range(len(users))}[turn]
    rows = []
    for ordinal in picked:
        i = users[ordinal]
        rows.append(ChatRow(turns[i].text, layout(turns[:i]), ordinal, sum(t.media for t in turns[: i + 1])))
    return rows
