"""The simulator's answer model: what a chat request is answered, as pure functions (no server).

See the package docstring (:mod:`selectllm.llm.simulator`) for the heuristics.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

CANDIDATE_RE = re.compile(r'<candidate id="(\d+)">\s*(.*?)\s*</candidate>', re.S)
SELECT_K_RE = re.compile(r"Select exactly (\d+) instruction", re.I)
RATE_RE = re.compile(r"Rate the following", re.I)
INPUT_RE = re.compile(r"### Input:(.*?)(?:###|\Z)", re.S)
WORD_RE = re.compile(r"\w+")
REASONS_RE = re.compile(r"in brackets, then a one-line reason", re.I)  # select.reasons, text form
EXAMPLE_RE = re.compile(r"e\.g\.,? (\[[\d, \]\[]*\])")  # the format example of a selection prompt
INJECTION_RE = re.compile(r"\b(?:pick|select|choose) (?:me|this)\b|ignore the above", re.I)
MALFORMED = (
    "I think every one of these instructions is valuable, so I cannot pick just a few.",
    "Sure! Here are my thoughts on the candidates: they vary a lot in quality and scope.",
    "As a language model I would rather not choose; all of them seem useful for annotation.",
    "The best instruction is the one that teaches the most. Hope this helps!",
)


# --------------------------------------------------------------------------- pure answer logic


def _score_parts(text: str) -> tuple[int, float, bool]:
    """What the selection heuristic weighs: characters, the share of distinct words, an input."""
    t = text.strip()
    words = [w.lower() for w in WORD_RE.findall(t)]
    m = INPUT_RE.search(t)
    return len(t), len(set(words)) / len(words) if words else 0.0, bool(m and m.group(1).strip())


def candidate_score(text: str) -> float:
    """The selection heuristic for one candidate (see module doc)."""
    chars, distinct, has_input = _score_parts(text)
    return math.log1p(chars) + distinct + (0.5 if has_input else 0.0)


def score_reason(text: str) -> str:
    """The heuristic's one-line reason for a pick: the parts of :func:`candidate_score`."""
    chars, distinct, has_input = _score_parts(text)
    return (f"score {candidate_score(text):.2f}: {chars} characters, {distinct:.0%} distinct words"
            + (", has an input" if has_input else ""))


def select_ids(candidates: list[tuple[int, str]], k: int) -> list[int]:
    ranked = sorted(candidates, key=lambda c: (-candidate_score(c[1]), c[0]))
    return [cid for cid, _ in ranked[: max(0, k)]]


def rating_score(text: str) -> int:
    words = len(WORD_RE.findall(text))
    return min(5, 1 + int(math.floor(math.log2(1 + words / 8))))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _schema_key(response_format: dict | None, types: tuple[str, ...], default: str) -> str:
    try:
        props = response_format["json_schema"]["schema"]["properties"]  # type: ignore[index]
        for name, spec in props.items():
            if isinstance(spec, dict) and spec.get("type") in types:
                return str(name)
    except (KeyError, TypeError, AttributeError):
        pass
    return default


def _items_are_objects(response_format: dict | None, key: str) -> bool:
    try:
        return response_format["json_schema"]["schema"]["properties"][key]["items"]["type"] == "object"  # type: ignore[index]
    except (KeyError, TypeError):
        return False


def _no_draw(name: str) -> float:
    return 1.0  # never below a rate: no habit, no bias


def choose(cands: list[tuple[int, str]], k: int, cfg=None, draw=_no_draw) -> list[int]:
    """The ids a selection answer names: the heuristic's (or, ``chooser: uniform``, a seeded
    draw), or the first shown (``position_bias``), or a candidate asking to be picked
    (``habits.obey_injection``) first."""
    if cfg is not None and cfg.chooser == "uniform":
        ranked = sorted(cands, key=lambda c: draw(f"uniform:{c[0]}"))
        ids = [cid for cid, _ in ranked[:k]]
    else:
        ids = select_ids(cands, k)
    if cfg is None:
        return ids
    if draw("position") < cfg.position_bias:
        ids = [cid for cid, _ in cands[:k]]
    if draw("obey_injection") < cfg.habits.obey_injection:
        pushy = [cid for cid, t in cands if INJECTION_RE.search(t)]
        ids = (pushy + [i for i in ids if i not in pushy])[:k]
    return ids


def with_habit(ids: list[int], n: int, k: int, source: str, json_mode: bool, key: str, cfg=None,
               draw=_no_draw) -> str | None:
    """The answer in the form of the first habit drawn (None: no habit, the usual form)."""
    if cfg is None:
        return None
    h = cfg.habits
    as_json = lambda xs: json.dumps({key: xs})  # noqa: E731
    as_text = lambda xs: ", ".join(f"[{i}]" for i in xs)  # noqa: E731
    plain = as_json if json_mode else as_text
    others = [i for i in range(1, n + 1) if i not in ids][:2]
    if draw("refusal") < h.refusal:
        return "I'm sorry, but I can't decide which of these instructions are most valuable."
    if draw("echo_example") < h.echo_example:
        m = EXAMPLE_RE.search(source)
        return m.group(1) if m else "[1]"
    if draw("think") < h.think:
        mention = " and ".join(f"[{i}]" for i in others) or "the others"
        return f"<think>{mention} look weaker; I prefer {as_text(ids)}.</think>\n{plain(ids)}"
    if draw("prose") < h.prose:
        mention = " and ".join(f"[{i}]" for i in others) or "the rest"
        return f"Compared with {mention}, my choice is clear.\nAnswer: {as_text(ids)}"
    if draw("wrong_count") < h.wrong_count:
        return plain(ids[:-1] if len(ids) > 1 and draw("fewer") < 0.5 else ids + others[:1])
    if draw("zero_based") < h.zero_based:
        return plain([i - 1 for i in ids])
    if draw("out_of_range") < h.out_of_range:
        return plain(ids + [n + 1])
    if draw("fenced") < h.fenced:
        return f"```json\n{as_json(ids)}\n```"
    if draw("truncated") < h.truncated:
        full = as_json(ids)  # cut after the first identifier, as max_tokens would
        return full[: full.index(",") + 1] if "," in full else full[: max(1, len(full) // 2)]
    return None


def answer_text(messages: list[dict], response_format: dict | None, cfg=None, draw=_no_draw) -> str:
    """The full (untruncated) deterministic answer to a chat request.  ``cfg``: a
    :class:`SimulatorConfig` whose chooser, ``position_bias`` and habits apply to selection
    answers; ``draw(name)``: a number in [0, 1) per decision (a pure function of the request)."""
    json_mode = isinstance(response_format, dict) and response_format.get("type") in (
        "json_object", "json_schema")
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    everything = "\n".join(_text_of(m.get("content")) for m in messages)

    source = last_user if CANDIDATE_RE.search(last_user) else everything
    cands = [(int(i), t) for i, t in CANDIDATE_RE.findall(source)]
    if cands:
        m = SELECT_K_RE.search(source) or SELECT_K_RE.search(everything)
        k = int(m.group(1)) if m else 1
        ids = choose(cands, k, cfg, draw)
        texts = dict(cands)
        key = _schema_key(response_format, ("array",), "selected") if json_mode else "selected"
        odd = with_habit(ids, len(cands), k, source, json_mode, key, cfg, draw)
        if odd is not None:
            return odd
        if json_mode:
            if _items_are_objects(response_format, key):  # {"choices": [{"id": 3, "reason": "..."}]}
                return json.dumps({key: [{"id": i, "reason": score_reason(texts[i])} for i in ids]})
            return json.dumps({key: ids})
        if REASONS_RE.search(source):
            return "\n".join(f"[{i}] {score_reason(texts[i])}" for i in ids)
        return ", ".join(f"[{i}]" for i in ids)

    src = last_user if RATE_RE.search(last_user) else everything
    m = RATE_RE.search(src)
    if m:
        score = rating_score(src[m.end():])
        if json_mode:
            key = _schema_key(response_format, ("integer", "number"), "score")
            return json.dumps({key: score})
        return f"Score: {score}"

    echo = " ".join(last_user.split()[:12])
    if json_mode:
        return json.dumps({"answer": f"Simulated answer: {echo}"})
    return f"Simulated answer: {echo}"


def _unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from its arguments."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(h[:16], 16) / 2**64
