"""The low-information rules (selectllm/text/quality.py) and the selection-quality figures
(selectllm/report/quality.py): pure functions, no Spark or Ray."""

from __future__ import annotations

import numpy as np
import pytest

from selectllm.config import load_config
from selectllm.report import quality as Q
from selectllm.text.quality import RULES, QualityRules, low_quality_rule

JUNK = {
    "placeholder": ["test", "test 123", "asdf", "Lorem ipsum dolor sit amet", "N/A", "{instruction}", "<noinput>",
                    "[INST] [/INST]", "foo bar"],
    "few_words": ["123", "42 17", "6 + 3 = ?"],
    "alpha_words": ["1 2 3 4 5 6 7 q", "99 + 12 - 7 * 3 / 2 = z"],
    "symbols": ["$$$ %%% *** a", "!!?? (a) ##"],
    "long_words": ["aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8=", "https://example.com/a/very/long/path?query=1"],
    "repetition": ["buy buy buy buy now", "aaaaaaaaaaaa", "abababababab"],
}
FINE = ["Define photosynthesis.", "What is 3 + 4?", "Calculate 3^2 + 6", "Summarize https://example.com/article in two lines.",
        "Write a haiku about the sea.", "Translate to French: good morning", "Explain the test of a hypothesis.",
        "Does Lorem ipsum backwards fail to demonstrate alliteration?", "hi there, can you help me plan a trip?",
        "The deli has four kinds of bread, six kinds of meat, and five kinds of cheese. How many sandwiches?"]


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_catches_its_junk(rule):
    for text in JUNK[rule]:
        assert low_quality_rule(text) == rule, text


@pytest.mark.parametrize("text", FINE)
def test_real_instructions_pass(text):
    assert low_quality_rule(text) is None


def test_rules_and_thresholds_come_from_the_config():
    q = load_config(None, ["dedup.quality.rules=[symbols]", "dedup.quality.min_words=3"]).dedup.quality
    rules = q.rules_object()
    assert low_quality_rule("test", rules) is None  # placeholder is off
    assert low_quality_rule("$$$ %%% *** a", rules) == "symbols"
    assert low_quality_rule("Define photosynthesis.", QualityRules(min_words=3)) == "few_words"
    assert load_config(None, ["dedup.quality.enabled=false"]).dedup.quality.rules_object() is None
    custom = load_config(None, ["dedup.quality.placeholders=[Hello]"]).dedup.quality.rules_object()
    assert low_quality_rule("hello!", custom) == "placeholder" and low_quality_rule("test", custom) is None


# ----------------------------------------------------------------------------- figures
def _rows(x, source, has_input, length, lq=None):
    return Q.Rows(x.astype(np.float32), np.asarray(source, dtype=object), np.asarray(has_input, bool),
                  np.asarray(length, np.int64), None if lq is None else np.asarray(lq, bool))


def test_tvd():
    assert Q.tvd(np.array(["a", "a", "b", "b"]), np.array(["a", "b"])) == 0.0
    assert Q.tvd(np.array(["a", "a"]), np.array(["b"])) == 1.0
    assert Q.tvd(np.array([1, 1, 1, 2]), np.array([1, 2])) == pytest.approx(0.25)


def test_profile_tells_a_tail_seeking_selection_from_a_random_one():
    rng = np.random.default_rng(0)
    bulk = rng.normal(size=(1800, 32)) * 0.5 + np.r_[4.0, np.zeros(31)]  # a dense blob
    tail = rng.normal(size=(200, 32))  # spread out
    x = np.vstack([bulk, tail])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    source = np.where(np.arange(n) < 1800, "bulk.jsonl", "tail.jsonl")
    has_input = np.arange(n) >= 1800
    length = np.where(np.arange(n) < 1800, 50, 500) + rng.integers(0, 20, n)
    ref = Q.Reference(_rows(x, source, has_input, length), topics=10)
    tail_pick = np.arange(1800, 1900)
    random_pick = np.sort(rng.choice(n, 100, replace=False))
    dup = np.r_[random_pick[:50], random_pick[:50]]
    t = ref.profile(ref.rows.take(tail_pick))
    r = ref.profile(ref.rows.take(random_pick))
    assert t["sparse_share"] > 0.5 and r["sparse_share"] < 0.25
    assert t["dense_share"] < 0.1 and 0.35 < r["dense_share"] < 0.65
    for key in ("topic_tvd", "source_tvd", "input_tvd", "length_tvd"):
        assert t[key] > r[key] + 0.3, key
    assert t["length_ratio"] > 5 and 0.5 < r["length_ratio"] < 2
    assert r["duplicate_rate"] < 0.05 and ref.profile(ref.rows.take(dup))["duplicate_rate"] == 1.0
    band = ref.random_band(100)
    assert band["source_tvd"][0] <= band["source_tvd"][1] < t["source_tvd"]
    assert t["low_quality_rate"] is None
    lq = _rows(x[:4], source[:4], has_input[:4], length[:4], [True, False, False, False])
    assert ref.profile(lq)["low_quality_rate"] == 0.25
