"""Normalization and ids: pure functions, no engine."""

from __future__ import annotations

import hashlib

import pytest

from selectllm.config import PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT
from selectllm.text.normalize import clean_text, content_id, dedup_key_text, render_text


def test_clean_text_whitespace_and_nfkc():
    assert clean_text("  Hello\u00a0\t  world  ") == "Hello world"
    assert clean_text("a  \r\nb\rc") == "a\nb\nc"
    assert clean_text("p1\n\n\n\n\np2") == "p1\n\np2"  # 3+ newlines -> 2
    assert clean_text("p1\n \n \np2") == "p1\n\np2"  # lines of spaces count as blank
    assert clean_text("line  \nnext\t") == "line\nnext"  # trailing spaces per line
    assert clean_text("ﬁle ＡＢＣ ①") == "file ABC 1"  # NFKC
    assert clean_text(None) == "" and clean_text("   \n\t ") == ""


@pytest.mark.parametrize("s", ["  a \t b\r\n\r\n\r\nc  ", "ﬁ\u3000x", "x\n\n\ny \n z", ""])
def test_clean_text_idempotent(s):
    assert clean_text(clean_text(s)) == clean_text(s)


def test_dedup_key_text():
    assert dedup_key_text("Hello, WORLD!!") == "hello world"
    assert dedup_key_text("  What's   the\n\ttime?  ") == "whats the time"
    assert dedup_key_text("a+b=c $5 €") == "abc 5"  # symbols dropped
    assert dedup_key_text("zero\u200bwidth") == "zerowidth"  # format chars dropped
    assert dedup_key_text("Straße") == dedup_key_text("STRASSE")  # casefold


def test_content_id_variants_share_an_id():
    base = content_id("Give three tips for staying healthy.", "")
    for variant in [
        "give three tips for staying healthy",
        "  Give   three tips, for staying healthy!!! ",
        "GIVE THREE TIPS FOR STAYING HEALTHY.",
        "Give\tthree\ntips for staying\u00a0healthy?",
    ]:
        assert content_id(variant, "") == base
        assert content_id(variant, None) == base
    assert len(base) == 32 and all(c in "0123456789abcdef" for c in base)


def test_content_id_distinguishes():
    ids = {
        content_id("Give three tips for staying healthy.", ""),
        content_id("Give four tips for staying healthy.", ""),
        content_id("Give three tips", "for staying healthy"),  # the split between fields matters
        content_id("Give three tips for staying", "healthy"),
        content_id("", "Give three tips for staying healthy."),
    }
    assert len(ids) == 5


def test_content_id_is_stable():
    # a pinned value: changing the normalization or hashing changes every id in every run dir
    assert content_id("Hello, world!", "") == content_id("hello world", "")
    assert content_id("hello world", "") == hashlib.sha256(b"hello world\n").hexdigest()[:32]


def test_render_text_templates_and_braces():
    assert render_text("Do X", "", PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT) == (
        "### Instruction: Do X\n\n### Response:"
    )
    assert render_text("Do X", "data", PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT) == (
        "### Instruction: Do X\n\n### Input: data\n\n### Response:"
    )
    # braces and placeholders inside the data are left alone
    got = render_text("f({x}) {input}", "{instruction} {0}", "{instruction}|{input}", "{instruction}")
    assert got == "f({x}) {input}|{instruction} {0}"


NORMALIZATION_CASES = [
    "for i in range(10):\n    print(i)\n\n\n\treturn  i  ",
    "  Leading\r\nCRLF\rCR\u2028LS\u2029PS\x85NEL\x0bVT\x0cFF trailing\t",
    "Caf\u00e9 / Cafe\u0301, \uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48, NBSP\u00a0\u3000ideographic",
    "\u4f60\u597d\uff0c\u4e16\u754c \U0001f600 \u2460 \ufb01ne \u00bd",
    "zero\u200bwidth\ufeffBOM and   runs\t\tof\n\n\n\nspace",
]


@pytest.mark.parametrize("s", NORMALIZATION_CASES)
def test_ids_and_near_dedup_keys_do_not_depend_on_the_source_spacing(s):
    """dedup keeps the source text and normalizes only to compare: the id and the shingled text of
    the source equal those of its normalized (embedded) form."""
    from selectllm.text.minhash import shingle_text

    assert content_id(s, s[::-1]) == content_id(clean_text(s), clean_text(s[::-1]))
    assert shingle_text(s, s[::-1]) == shingle_text(clean_text(s), clean_text(s[::-1]))
    assert dedup_key_text(s) == dedup_key_text(clean_text(s))
