"""Turning an LLM's answer into candidate positions, accepting only what the prompt offered.

Accepted forms: ``{"selected": [3, 7]}`` (structured outputs), ``[3], [7]`` (the paper's form) and
``[3, 7]`` (a Python-style list).  Identifiers outside 1..n and repeats are dropped and reported;
at most ``picks`` are kept, in the order given.  Free text around them is ignored, so an answer
never selects anything that was not in this prompt.

With reasons (``select.reasons``): ``{"choices": [{"id": 3, "reason": "..."}]}`` or lines that
start with a bracketed identifier, ``[3] reason...`` (``- [3]: reason``, ``1. [3] — reason`` too);
a bracket later in such a line belongs to its reason ("[3] clearer than [5]" picks 3 only).  An
answer with no such line is read as above, with empty reasons.  A reason is one line of at most
:data:`MAX_REASON_CHARS` printable characters; a pick without one gets ``""``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_BRACKETS = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
# a line of the reasons text form: optional bullet or number, "[3]", then the reason
_REASON_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])?\s*\[\s*(\d+)\s*\]\s*[:\-\u2013\u2014.]*\s*(.*)$")
# what may follow the first bracket of a line that holds identifiers only ("[3], [7]", "[3] and [7]")
_ONLY_IDS = re.compile(r"(?:[\s,;.]|and|\[\s*\d+(?:\s*,\s*\d+)*\s*\])*")
MAX_REASON_CHARS = 300


@dataclass
class Parsed:
    positions: list[int]  # 0-based candidate positions, valid and unique
    problems: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # one per position ("" when none was given)


def clean_reason(value) -> str:
    """One printable line of at most MAX_REASON_CHARS characters ("" for anything not a string)."""
    if not isinstance(value, str):
        return ""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "\u2026"


def _json_ids(text: str) -> tuple[list, list] | None:
    """(identifiers, reasons) of a JSON answer, or None when the answer is not one."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("selected"), list):
        return obj["selected"], [""] * len(obj["selected"])
    if isinstance(obj.get("choices"), list):
        ids, reasons = [], []
        for c in obj["choices"]:
            ids.append(c.get("id") if isinstance(c, dict) else c)
            reasons.append(clean_reason(c.get("reason")) if isinstance(c, dict) else "")
        return ids, reasons
    return None


def _bracket_ids(text: str) -> list[int]:
    return [int(x) for group in _BRACKETS.findall(text) for x in group.split(",")]


def _text_ids(text: str, with_reasons: bool) -> tuple[list, list]:
    ids: list = []
    reasons: list[str] = []
    if with_reasons:
        for line in text.splitlines():
            m = _REASON_LINE.match(line)
            if m is None:
                continue
            if _ONLY_IDS.fullmatch(m.group(2)):  # identifiers without reasons on this line
                found = _bracket_ids(line)
                ids += found
                reasons += [""] * len(found)
            else:
                ids.append(int(m.group(1)))
                reasons.append(clean_reason(m.group(2)))
        if ids:
            return ids, reasons
    ids = _bracket_ids(text)
    return ids, [""] * len(ids)


def parse_selection(text: str | None, n_candidates: int, picks: int, reasons: bool = False) -> Parsed:
    """``reasons``: the prompt asked for a reason per pick (lines ``[3] reason``; see module doc)."""
    if not text or not text.strip():
        return Parsed([], ["empty answer"])
    raw, given = _json_ids(text) or _text_ids(text, reasons)
    problems: list[str] = []
    seen: list[int] = []
    said: list[str] = []
    for value, why in zip(raw, given):
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            problems.append(f"not an identifier: {str(value)[:20]!r}")
            continue
        ident = int(value)
        if not 1 <= ident <= n_candidates:
            problems.append(f"identifier {ident} was not offered (1..{n_candidates})")
        elif ident - 1 in seen:
            problems.append(f"identifier {ident} repeated")
        else:
            seen.append(ident - 1)
            said.append(why)
    if len(seen) > picks:
        problems.append(f"{len(seen)} identifiers for {picks} picks; kept the first {picks}")
        seen, said = seen[:picks], said[:picks]
    if not raw:
        problems.append("no identifiers in answer")
    return Parsed(seen, problems, said)
