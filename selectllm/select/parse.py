"""Turning an LLM's answer into candidate positions, accepting only what the prompt offered.

Read in this order (each step that changes anything adds its *parse class*, see PARSE_CLASSES):

1. A reasoning block is set aside: text inside ``<think>...</think>`` (``<thinking>``,
   ``<reasoning>`` too) is not the answer; after a designated answer marker (``Answer:``,
   ``Final answer:``, ``Selected:``) only the text after the last marker is.  An unclosed block
   means the answer was never given.
2. A code fence (````json ... ````) is unwrapped.
3. JSON: ``{"selected": [3, 7]}`` (structured outputs) or ``{"choices": [{"id": 3, ...}]}``;
   JSON cut at ``max_tokens`` keeps the identifiers that were complete (``[3, 7`` keeps 3).
4. Text: *answer lines* hold the picks -- a line of identifiers only (``[3], [7]``, ``[3, 7]``,
   ``1. [2, 3]``) or a line that starts with a bracketed identifier (``- [3] "Summarize ..."``,
   the reasons form ``[3] reason``).  Identifiers in prose lines around them are ignored (``I
   pick [4] because it beats [1]``).  Without answer lines, identifiers in prose are taken only
   when there are no more of them than picks; more is ambiguous (rejected ids cannot be told from
   chosen ones).  Without brackets, an answer made of numbers and words such as ``Instruction``,
   ``#``, ``and`` (``4``, ``Instruction 4``, ``#4 and #7``) is read as those numbers.
5. Identifiers: a list holding 0 with all of its identifiers in 0..n-1 is read as 0-based; ids
   outside 1..n are dropped (an answer that repeats the format example, whose ids are outside on
   purpose, is flagged ``echo_example``); repeats are dropped; an answer that names every offered
   identifier made no choice (``lists_all``, unusable: small models count ``[1] [2] ... [n]``,
   and keeping the first would be position 1); at most ``picks`` are kept, in the order given.
   So an answer never selects anything that was not in this prompt.

With reasons (``select.reasons``): ``{"choices": [{"id": 3, "reason": "..."}]}`` or lines that
start with a bracketed identifier, ``[3] reason...``; a bracket later in such a line belongs to its
reason.  A reason is one line of at most :data:`MAX_REASON_CHARS` printable characters; a pick
without one (or with the prompt's placeholder copied, ``<one-line reason>``) gets ``""``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# parse classes: what was unusual about an answer (decisions.parquet ``parse``, the run's health)
PARSE_CLASSES = {
    "reasoning": "the answer followed a reasoning block or an 'Answer:' marker",
    "reasoning_unfinished": "a reasoning block was never closed: no answer given (unusable)",
    "fenced": "the answer was inside a code fence",
    "truncated_json": "JSON cut short (max_tokens); the complete identifiers were kept",
    "prose": "identifiers in prose; answer lines (or, without them, few enough ids) used",
    "prose_ambiguous": "more identifiers in prose than picks and no answer line (unusable)",
    "bare_numbers": "numbers without brackets ('4', 'Instruction 4')",
    "zero_based": "0-based identifiers, shifted by one",
    "echo_example": "the answer repeated the prompt's format example",
    "out_of_range": "identifiers that were not offered were dropped",
    "repeated": "repeated identifiers were dropped",
    "too_many": "more identifiers than picks; the first were kept",
    "lists_all": "every offered identifier named (a count, not a choice; unusable)",
    "too_few": "fewer identifiers than picks; the rest topped up LLM-free",
    "not_an_id": "a value that is not an identifier was dropped",
    "no_ids": "no identifiers in the answer, e.g. a refusal (unusable)",
    "empty": "empty answer (unusable)",
}
UNUSABLE_CLASSES = ("reasoning_unfinished", "prose_ambiguous", "lists_all", "no_ids", "empty")

_BRACKETS = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
# a line that starts with a bracketed identifier (optional bullet or number first), then the rest
_REASON_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])?\s*\[\s*(\d+)\s*(?:,[\d\s,]*)?\]\s*[:\-\u2013\u2014.]*\s*(.*)$")
# what may follow the first bracket of a line that holds identifiers only ("[3], [7]", "[3] and [7]")
_ONLY_IDS = re.compile(r"(?:[\s,;.]|and|\[\s*\d+(?:\s*,\s*\d+)*\s*\])*", re.I)
_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.I)
_MARKER = re.compile(r"^[\s*#]*(?:final answer|answer|selected|selection)[\s*]*:", re.I | re.M)
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|\Z)", re.S)
_TRUNCATED = re.compile(r'"(?:selected|choices)"\s*:\s*\[(.*)', re.S)
# a bracket-free answer of numbers: "4", "Instruction 4", "#4 and #7", "Candidates 2, 5."
_BARE = re.compile(r"(?:\s|[,;.#:]|and|instructions?|candidates?|ids?|numbers?|\d+)*", re.I)
MAX_REASON_CHARS = 300
PLACEHOLDER_REASON = "<one-line reason>"  # the reasons form's example (prompts.reasons_example uses it); copied: no reason


@dataclass
class Parsed:
    positions: list[int]  # 0-based candidate positions, valid and unique
    problems: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # one per position ("" when none was given)
    classes: list[str] = field(default_factory=list)  # PARSE_CLASSES keys, in the order met

    @property
    def usable(self) -> bool:
        return bool(self.positions)

    def flag(self, cls: str, problem: str | None = None) -> None:
        if cls not in self.classes:
            self.classes.append(cls)
        if problem:
            self.problems.append(problem)


def clean_reason(value) -> str:
    """One printable line of at most MAX_REASON_CHARS characters ("" for anything not a string)."""
    if not isinstance(value, str):
        return ""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())
    if text == PLACEHOLDER_REASON:
        return ""
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "\u2026"


def _json_ids(text: str, out: Parsed) -> tuple[list, list] | None:
    """(identifiers, reasons) of a JSON answer, or None when the answer is not one."""
    start, end = text.find("{"), text.rfind("}")
    obj = None
    if start >= 0 and end > start:
        try:
            obj = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            obj = None
    if not isinstance(obj, dict):
        m = _TRUNCATED.search(text) if start >= 0 else None
        if m is None or "]" in m.group(1):
            return None
        # cut short: keep the identifiers followed by a delimiter (the last one may be cut mid-number)
        ids = re.findall(r"(\d+)\s*[,}]", m.group(1))
        out.flag("truncated_json", "answer cut short; kept its complete identifiers")
        return ids, [""] * len(ids)
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


def _text_ids(text: str, picks: int, out: Parsed) -> tuple[list, list]:
    ids: list = []
    reasons: list[str] = []
    prose_ids = 0
    for line in text.splitlines():
        m = _REASON_LINE.match(line)
        if m is None:
            prose_ids += len(_bracket_ids(line))
            continue
        lead = _BRACKETS.search(line)
        if _ONLY_IDS.fullmatch(m.group(2)) or "," in lead.group(1):  # identifiers without reasons on this line
            found = _bracket_ids(line) if _ONLY_IDS.fullmatch(m.group(2)) else _bracket_ids(lead.group(0))
            ids += found
            reasons += [""] * len(found)
        else:
            ids.append(int(m.group(1)))
            reasons.append(clean_reason(m.group(2)))
    if ids:
        if prose_ids:
            out.flag("prose", f"{prose_ids} identifier(s) in prose ignored; the answer lines were used")
        return ids, reasons
    ids = _bracket_ids(text)
    if ids:
        if len(set(ids)) > picks:
            out.flag("prose_ambiguous", f"{len(set(ids))} identifiers in prose for {picks} pick(s) and no answer line")
            return [], []
        out.flag("prose")
        return ids, [""] * len(ids)
    if _BARE.fullmatch(text.strip()) and re.search(r"\d", text):
        ids = [int(x) for x in re.findall(r"\d+", text)]
        out.flag("bare_numbers")
        return ids, [""] * len(ids)
    return [], []


def _answer_part(text: str, out: Parsed) -> str:
    """The text that holds the answer: reasoning blocks set aside, fences unwrapped."""
    if _THINK.search(text):
        text = _THINK.sub("", text)
        out.flag("reasoning")
    if _THINK_OPEN.search(text):
        out.flag("reasoning_unfinished", "the reasoning block was never closed: no answer was given")
        return ""
    markers = list(_MARKER.finditer(text))
    if markers and text[markers[-1].end():].strip():
        text = text[markers[-1].end():].lstrip(" *\t")
        out.flag("reasoning")
    fence = _FENCE.search(text)
    if fence and fence.group(1).strip():
        text = fence.group(1)
        out.flag("fenced")
    return text


def parse_selection(text: str | None, n_candidates: int, picks: int, reasons: bool = False,
                    example: list[int] | tuple[int, ...] = ()) -> Parsed:
    """``reasons``: the prompt asked for a reason per pick (lines ``[3] reason``; see module doc).
    ``example``: the identifiers of the prompt's format example (outside 1..n), to flag echoes."""
    out = Parsed([])
    if not text or not text.strip():
        out.flag("empty", "empty answer")
        return out
    part = _answer_part(text, out)
    if "reasoning_unfinished" in out.classes:
        return out
    found = _json_ids(part, out)
    raw, given = found if found is not None else _text_ids(part, picks, out)
    if "prose_ambiguous" in out.classes:
        return out
    if not raw:
        out.flag("no_ids", "no identifiers in answer")
        return out
    if not reasons:
        given = [""] * len(raw)
    digits = [int(v) for v in raw if not isinstance(v, bool) and isinstance(v, (int, str)) and str(v).strip().isdigit()]
    shift = 1 if digits and 0 in digits and max(digits) < n_candidates else 0
    if shift:
        out.flag("zero_based", "0-based identifiers; shifted by one")
    if example and set(digits) and set(digits) <= set(example) | {0} and not set(digits) & set(range(1, n_candidates + 1)):
        out.flag("echo_example", "the answer repeats the prompt's format example")
    seen: list[int] = []
    said: list[str] = []
    for value, why in zip(raw, given):
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            out.flag("not_an_id", f"not an identifier: {str(value)[:20]!r}")
            continue
        ident = int(value) + shift
        if not 1 <= ident <= n_candidates:
            out.flag("out_of_range", f"identifier {ident} was not offered (1..{n_candidates})")
        elif ident - 1 in seen:
            out.flag("repeated", f"identifier {ident} repeated")
        else:
            seen.append(ident - 1)
            said.append(why)
    if len(seen) == n_candidates > picks:  # "[1]\n[2]\n...[n]": counting, not choosing (its first is position 1)
        out.flag("lists_all", f"all {n_candidates} identifiers named for {picks} pick(s): no choice made")
        return out
    if len(seen) > picks:
        out.flag("too_many", f"{len(seen)} identifiers for {picks} picks; kept the first {picks}")
        seen, said = seen[:picks], said[:picks]
    elif 0 < len(seen) < picks:
        out.flag("too_few", f"{len(seen)} identifier(s) for {picks} picks")
    if not seen and "echo_example" not in out.classes and "no_ids" not in out.classes:
        out.flag("no_ids", "no offered identifier in answer")
    out.positions, out.reasons = seen, said
    return out
