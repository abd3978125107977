"""Low-information rows: the rules the ``dedup`` stage quarantines as ``low_quality`` (``dedup.quality``).

The rules are the instruction-sized form of the document filters datatrove applies (Gopher
quality and repetition, C4's placeholder rule), as pure functions of the instruction: a web
document must have 50+ words, an instruction may have two ("Define photosynthesis."), so
datatrove's ``GopherQualityFilter`` / ``C4QualityFilter`` cannot be used as they stand, and their
per-document ``Document`` pipeline would add a step (and loguru, dill, multiprocess) for six
comparisons.  Each rule names itself when it fires (the first that fires wins, in this order):

* ``placeholder`` -- the instruction is a test string or a template field only ("test 123",
  "asdf", "lorem ipsum", "N/A", "{instruction}", "<noinput>"): C4's "lorem ipsum" / placeholder rule.
* ``few_words`` -- fewer than ``min_words`` words with a letter (Gopher: word count bounds).
* ``alpha_words`` -- under ``min_alpha_word_share`` (0.2) of the words hold a letter ("123 456 789
  000 111", "!!! ???"; Gopher: 80% of a document's words must, but "Calculate 3^2 + 6" is a fine
  instruction with one word in four).
* ``symbols`` -- over ``max_symbol_share`` of the non-space characters are neither letters nor
  digits ("$$$ %%% ***"; Gopher's symbol-to-word ratio).
* ``long_words`` -- under 3 words, of mean length above ``max_mean_word_length`` or one a machine
  token (8+ characters mixing letters and digits, or switching case 3+ times): a base64 blob, a
  hash, a bare URL, a random key (Gopher: mean word length 3-10 for prose).
* ``repetition`` -- with 4-30 words, one word is over ``max_top_word_share`` of them, or 8+
  characters use at most 3 distinct ones ("test test test test", "aaaaaaaa", "!?!?!?!?";
  Gopher's repetition filter at instruction size).

Only the instruction is judged: the input may be code, a table or numbers.  The false-positive
rate on the curated rows of ``../shared/data`` and the share of planted junk caught are measured
by ``benchmarks/bench_quality.py --filter`` (README "Low-information filter").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

SHORT_WORDS = 3  # long_words judges instructions of fewer words (a blob or a bare URL, not a request with a link)
REPEAT_MAX_WORDS = 30  # the top-word share judges short instructions ("the" fills long ones)
RULES = ("placeholder", "few_words", "alpha_words", "symbols", "long_words", "repetition")
PLACEHOLDERS = frozenset({
    "test", "testing", "tests", "asdf", "asdfgh", "qwerty", "foo", "bar", "foobar", "baz", "xxx", "xx", "x",
    "n a", "na", "none", "null", "nil", "nan", "undefined", "todo", "tbd", "placeholder", "sample", "example",
    "dummy", "lorem ipsum", "blah", "blah blah", "abc", "abcd", "hello world", "instruction", "input", "noinput",
    "no input", "prompt", "text", "query", "question",
})
_TEMPLATE_ONLY = re.compile(r"^\s*(?:(?:\{\{?\s*[\w .-]*\}\}?|<\s*/?[\w .-]*>|\[\s*/?[\w .-]*\]|\$\{?\w+\}?|%\(?\w*\)?s)\s*)+$")
_NON_WORD = re.compile(r"[^a-z]+")
_LETTER = re.compile(r"[^\W\d_]")


def _token(word: str) -> bool:
    """A machine token rather than a word: 8+ mostly alphanumeric characters mixing letters and
    digits, or switching case 3+ times ("0KO67IMReb", "cNQqEefRWi")."""
    if len(word) < 8 or sum(c.isalnum() for c in word) < 0.8 * len(word):  # "|(1+i)^6|." is maths
        return False
    has_digit = any(c.isdigit() for c in word)
    letters = [c for c in word if c.isalpha()]
    switches = sum(1 for a, b in zip(letters, letters[1:]) if a.islower() != b.islower())
    return (has_digit and bool(letters)) or switches >= 3


@dataclass(frozen=True)
class QualityRules:
    """The thresholds (``dedup.quality``; see the module doc)."""

    rules: tuple[str, ...] = RULES
    min_words: int = 1
    min_alpha_word_share: float = 0.2
    max_symbol_share: float = 0.5
    max_mean_word_length: float = 20.0
    max_top_word_share: float = 0.5
    placeholders: frozenset = field(default=PLACEHOLDERS)


def _placeholder(text: str, placeholders: frozenset) -> bool:
    if _TEMPLATE_ONLY.match(text):
        return True
    low = text.lower()
    if low.startswith("lorem ipsum"):
        return True
    words = _NON_WORD.sub(" ", low).split()  # letters only: "test 123!" -> "test"
    return 0 < len(words) <= 3 and (" ".join(words) in placeholders or all(w in placeholders for w in words))


def low_quality_rule(instruction: str, rules: QualityRules = QualityRules()) -> str | None:
    """The first rule the instruction breaks, or None (a row worth keeping)."""
    text = (instruction or "").strip()
    words = text.split()
    on = rules.rules
    if "placeholder" in on and _placeholder(text, rules.placeholders):
        return "placeholder"
    alpha = [w for w in words if _LETTER.search(w)]
    if "few_words" in on and len(alpha) < rules.min_words:
        return "few_words"
    if "alpha_words" in on and words and len(alpha) / len(words) < rules.min_alpha_word_share:
        return "alpha_words"
    chars = [c for c in text if not c.isspace()]
    if "symbols" in on and chars and sum(1 for c in chars if not c.isalnum()) / len(chars) > rules.max_symbol_share:
        return "symbols"
    if "long_words" in on and 0 < len(words) < SHORT_WORDS and (
            sum(len(w) for w in words) / len(words) > rules.max_mean_word_length or any(_token(w) for w in words)):
        return "long_words"
    if "repetition" in on:
        if 4 <= len(words) <= REPEAT_MAX_WORDS and Counter(w.lower() for w in words).most_common(1)[0][1] / len(words) > rules.max_top_word_share:
            return "repetition"
        if len(chars) >= 8 and len(set(chars)) <= 3:
            return "repetition"
    return None
