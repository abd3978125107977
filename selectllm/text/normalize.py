"""Text normalization: what is kept, what is compared, and the stable row id.  Pure, no engines.

The rows themselves are kept as in the source (``dedup/part-*.parquet``'s ``instruction`` and
``input``, the LLM prompts, ``selected.jsonl``); normalization is only for ids, dedup and the
embedded text.  Two different normal forms:

* :func:`clean_text` is what we *embed* (and what decides ``empty``): Unicode NFKC, line endings unified, runs of
  horizontal whitespace collapsed to one space, trailing spaces removed from every line, 3+ line
  breaks collapsed to 2 (a blank line stays meaningful), leading/trailing whitespace stripped.
  It is idempotent: ``clean_text(clean_text(s)) == clean_text(s)``.
* :func:`dedup_key_text` is what we *compare*: NFKC, casefolded, every punctuation (P*) and symbol
  (S*) character dropped, format characters (Cf, e.g. zero-width spaces and BOMs) dropped, all
  whitespace collapsed to single spaces.  Two instructions that differ only in case, spacing or
  punctuation get the same key and hence the same :func:`content_id`.

The id depends on Python's Unicode database (``unicodedata.unidata_version``) through NFKC and
the character categories; it is stable for a given Python minor version.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata

ID_LENGTH = 32  # hex chars of sha256 kept in the id (128 bits)

# Line separators other than "\n" that are turned into "\n" by clean_text.
_NEWLINES_RE = re.compile(r"\r\n|[\r\u2028\u2029\x85]")
# Whitespace other than "\n" (spaces, tabs, \v, \f, NBSP after NFKC, ideographic space, ...).
_HSPACE_RE = re.compile(r"[^\S\n]+")
_TRAILING_RE = re.compile(r" +\n")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_ANY_SPACE_RE = re.compile(r"\s+")

_drop_table: dict[int, None] | None = None


def _drop_map() -> dict[int, None]:
    """str.translate table removing every P*, S* and Cf character (built once per process)."""
    global _drop_table
    if _drop_table is None:
        table: dict[int, None] = {}
        cat = unicodedata.category
        for cp in range(sys.maxunicode + 1):
            c = cat(chr(cp))
            if c[0] in "PS" or c == "Cf":
                table[cp] = None
        _drop_table = table
    return _drop_table


def clean_text(s: str | None) -> str:
    """NFKC + whitespace normalization of embedded text (see module doc).  ``None`` gives ``""``."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKC", s)
    s = _NEWLINES_RE.sub("\n", s)
    s = _HSPACE_RE.sub(" ", s)
    s = _TRAILING_RE.sub("\n", s)
    # leading spaces of a line are collapsed to one space (indentation is kept, coarsely)
    s = _MANY_NEWLINES_RE.sub("\n\n", s)
    return s.strip()


def dedup_key_text(s: str | None) -> str:
    """The comparison form: NFKC, casefold, no punctuation/symbols/format chars, single spaces."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKC", s).casefold()
    s = s.translate(_drop_map())
    return _ANY_SPACE_RE.sub(" ", s).strip()


def content_id(instruction: str | None, input: str | None = "") -> str:  # noqa: A002 - column name
    """Stable id of a row: sha256 of the two comparison keys joined by a newline, first 32 hex."""
    key = dedup_key_text(instruction) + "\n" + dedup_key_text(input)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:ID_LENGTH]


_PLACEHOLDER_RE = re.compile(r"\{instruction\}|\{input\}")


def render_text(instruction: str, input: str, template: str, template_no_input: str) -> str:  # noqa: A002
    """The text that is embedded: ``template`` (or ``template_no_input`` when input is empty).

    Placeholders ``{instruction}`` and ``{input}`` are replaced in one pass, so braces (or a
    literal ``{input}``) inside the data are never interpreted.
    """
    instruction = instruction or ""
    input = input or ""
    tpl = template if input.strip() else template_no_input
    values = {"{instruction}": instruction, "{input}": input}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(0)], tpl)
