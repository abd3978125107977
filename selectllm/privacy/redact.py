"""Mask a row: every finding of :mod:`selectllm.privacy.detect` becomes a typed placeholder
numbered within the row (``<EMAIL_1>``, ``<EMAIL_2>``, ``<SECRET_1>``).  The same value gets the
same number in every field of the row (instruction, input, ``input.keep`` columns), so the masked
row still reads as one text; values are never kept, only their types' counts (:class:`Findings`).

One :class:`Redactor` per process (:func:`redactor`): a Spark Python worker builds its engine the
first time a task asks for it and reuses it for every later task, nothing is pickled from the
driver.
"""

from __future__ import annotations

import json
from collections import Counter

from selectllm.privacy.detect import ENTITIES, DetectTimeout, Detector

Findings = Counter  # entity type -> values masked in the row


def placeholder(kind: str, n: int) -> str:
    return f"<{kind}_{n}>"


class Redactor:
    """``privacy.entities``, ``privacy.phone_regions``, ``privacy.timeout_s`` -> a row masker."""

    def __init__(self, entities=ENTITIES, regions=None, timeout_s: float = 5.0):
        from selectllm.privacy.detect import DEFAULT_REGIONS

        self.detector = Detector(entities, regions or DEFAULT_REGIONS, timeout_s)

    def mask(self, text: str | None, numbers: dict | None = None, found: Findings | None = None) -> str | None:
        """``text`` with its findings replaced.  ``numbers`` ({(type, value): n}) and ``found`` are
        shared by the fields of one row; raises DetectTimeout."""
        if not text:
            return text
        spans = self.detector.find(text)
        if not spans:
            return text
        numbers = {} if numbers is None else numbers
        out, at = [], 0
        for s in spans:
            value = text[s.start:s.end]
            key = (s.type, value)
            if key not in numbers:
                numbers[key] = 1 + sum(1 for t, _ in numbers if t == s.type)
                if found is not None:
                    found[s.type] += 1
            out.append(text[at:s.start])
            out.append(placeholder(s.type, numbers[key]))
            at = s.end
        out.append(text[at:])
        return "".join(out)

    def mask_row(self, fields: dict[str, str | None]) -> tuple[dict[str, str | None], Findings]:
        """Every field of one row masked with shared numbering, and the row's findings (distinct
        values per type).  Raises DetectTimeout: the caller fails closed."""
        numbers: dict = {}
        found: Findings = Counter()
        return {k: self.mask(v, numbers, found) for k, v in fields.items()}, found


def findings_json(found: Findings) -> str | None:
    """The ``findings`` column: ``{"EMAIL": 2, "SECRET": 1}`` (sorted keys), null when none."""
    return json.dumps(dict(sorted(found.items())), separators=(",", ":")) if found else None


_REDACTORS: dict[tuple, Redactor] = {}


def redactor(entities, regions, timeout_s: float) -> Redactor:
    """The process's Redactor for these settings, built on first use."""
    key = (tuple(entities), tuple(regions), float(timeout_s))
    if key not in _REDACTORS:
        _REDACTORS[key] = Redactor(entities, regions, timeout_s)
    return _REDACTORS[key]


__all__ = ["DetectTimeout", "Findings", "Redactor", "findings_json", "placeholder", "redactor"]
