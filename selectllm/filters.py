"""``input.filter``: ``[column, op, value]`` conditions, all of which must hold.  Pure Python.

A condition on a *partition column* of a file is decided once per file, from the partition value
(the driver prunes the file: :func:`split_conditions`); a condition on any other column is
checked on every row of the file (:func:`row_passes`, in the reading tasks).

Comparison: a value is compared as the type of the operand.  A number operand compares
numerically (the partition value ``"10"`` is ``> 9``), a text operand as text (ISO dates order
correctly as text), a boolean operand with ``true``/``false``.  A date/datetime operand (YAML
reads ``2026-11-30`` as a date) is its ISO text.  ``today``, ``today-N``, ``today+N`` are dates in
UTC, resolved once per run (:func:`resolve`).  A null or missing value, or one that cannot be read
as the operand's type, satisfies no condition (as in SQL).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")


def operand(value: Any, today: date | None = None) -> Any:
    """An operand as compared: ``today`` / ``today-N`` -> ISO date (UTC), dates -> ISO text."""
    if isinstance(value, (list, tuple)):
        return [operand(v, today) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, str) and value.strip().startswith("today"):
        rest = value.strip()[len("today"):].replace(" ", "")
        day = today or datetime.now(timezone.utc).date()
        if rest == "":
            return day.isoformat()
        if rest[:1] in "+-" and rest[1:].isdigit():
            return (day + timedelta(days=int(rest))).isoformat()
    return value


def check(triples: list) -> list[tuple[str, str, Any]]:
    """``input.filter`` validated: a list of ``[column, op, value]``; ValueError (one line) otherwise."""
    out = []
    for t in triples:
        if not isinstance(t, (list, tuple)) or len(t) != 3:
            raise ValueError(f"{t!r} is not [column, op, value] (e.g. [dt, '>=', today-7])")
        col, op, value = t
        if not isinstance(col, str) or not col:
            raise ValueError(f"{t!r}: the column must be a name")
        if op not in OPS:
            raise ValueError(f"{t!r}: op must be one of {', '.join(OPS)}")
        many = isinstance(value, (list, tuple))
        if op in ("in", "not in") and not many:
            raise ValueError(f"{t!r}: '{op}' takes a list of values")
        if op not in ("in", "not in") and (many or isinstance(value, dict)):
            raise ValueError(f"{t!r}: '{op}' takes one value")
        for v in value if many else [value]:
            if isinstance(v, str) and v.strip().startswith("today") and operand(v) == v:
                raise ValueError(f"{t!r}: write today, today-N or today+N (N days)")
            if isinstance(v, (dict, list, tuple)) or v is None:
                raise ValueError(f"{t!r}: a value is a number, text, date or boolean")
        out.append((col, op, value))
    return out


def resolve(triples: list, today: date | None = None) -> list[list]:
    """The conditions with their operands as compared (``today`` resolved once)."""
    return [[col, op, operand(value, today)] for col, op, value in triples]


def as_text(value: Any) -> str | None:
    """A value as text, as a table's log or a folder name writes it (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _typed(text: str, like: Any) -> Any:
    """``text`` as the type of the operand ``like``; None when it is not one."""
    if isinstance(like, bool):
        return {"true": True, "false": False}.get(text.lower())
    if isinstance(like, (int, float)):
        try:
            return int(text) if isinstance(like, int) else float(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return None
    return text


def holds(value: Any, op: str, target: Any) -> bool:
    """One condition on one value (a partition value or a row's column); ``target`` resolved."""
    if isinstance(value, (dict, list, tuple)):
        return False
    text = as_text(value)
    if text is None:
        return False
    if op in ("in", "not in"):
        found = any(_typed(text, v) == v for v in target)
        return found if op == "in" else not found
    mine = _typed(text, target)
    if mine is None:
        return False
    return {"==": mine == target, "!=": mine != target, "<": mine < target, "<=": mine <= target,
            ">": mine > target, ">=": mine >= target}[op]


def split_conditions(partition: dict, conditions: list) -> tuple[bool, list]:
    """(whether a file with these partition values is read, the conditions left for its rows)."""
    rows = []
    for col, op, target in conditions:
        if col in partition:
            if not holds(partition[col], op, target):
                return False, []
        else:
            rows.append([col, op, target])
    return True, rows


def row_passes(record: dict, conditions: list) -> bool:
    """Whether a record (a dict of its columns) satisfies every condition (resolved)."""
    return all(col in record and holds(record[col], op, target) for col, op, target in conditions)
