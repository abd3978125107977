"""Turning an LLM's answer into candidate positions, accepting only what the prompt offered.

Accepted forms: ``{"selected": [3, 7]}`` (structured outputs), ``[3], [7]`` (the paper's form) and
``[3, 7]`` (a Python-style list).  Identifiers outside 1..n and repeats are dropped and reported;
at most ``picks`` are kept, in the order given.  Free text around them is ignored, so an answer
never selects anything that was not in this prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_BRACKETS = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


@dataclass
class Parsed:
    positions: list[int]  # 0-based candidate positions, valid and unique
    problems: list[str] = field(default_factory=list)


def _json_ids(text: str) -> list | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("selected"), list):
        return obj["selected"]
    return None


def parse_selection(text: str | None, n_candidates: int, picks: int) -> Parsed:
    if not text or not text.strip():
        return Parsed([], ["empty answer"])
    raw = _json_ids(text)
    if raw is None:
        raw = [int(x) for group in _BRACKETS.findall(text) for x in group.split(",")]
    problems: list[str] = []
    seen: list[int] = []
    for value in raw:
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
    if len(seen) > picks:
        problems.append(f"{len(seen)} identifiers for {picks} picks; kept the first {picks}")
        seen = seen[:picks]
    if not raw:
        problems.append("no identifiers in answer")
    return Parsed(seen, problems)
