"""MinHash LSH maths (selectllm.text.minhash): pure numpy, no Spark."""

from __future__ import annotations

import random

import numpy as np
import pytest

from selectllm.text.minhash import (
    EMPTY,
    band_keys,
    bands_rows,
    candidate_probability,
    estimate_jaccard,
    jaccard_sets,
    optimal_bands,
    shingle_sets,
    shingle_text,
    signatures,
    true_jaccard,
)

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega apple river stone cloud paper light music north").split()


def _sets(texts, n=5, kind="word"):
    off, vals = shingle_sets(texts, n, kind)
    return [vals[off[i]:off[i + 1]] for i in range(len(texts))]


def _edit(rng: random.Random, words: list[str], rate: float) -> list[str]:
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue  # deletion
        if r < 2 * rate / 3:
            out.append(rng.choice(WORDS))  # substitution
            continue
        out.append(w)
        if r < rate:
            out.append(rng.choice(WORDS))  # insertion
    return out


def test_shingle_text_is_the_comparison_form():
    assert shingle_text("Hello,   WORLD!", "") == "hello world"
    assert shingle_text("Hello", "  the Input.") == "hello the input"
    assert shingle_text("", "only input") == "only input"
    assert shingle_text("!!!", "???") == ""


def test_word_shingles_counts_short_and_empty_texts():
    texts = ["a b c d e f g", "a b c", "single", "", "a b c d e"]
    sets = _sets(texts, n=5)
    assert [len(s) for s in sets] == [3, 1, 1, 0, 1]
    # a text shorter than n gets one shingle: equal only to the same token sequence
    again = _sets(["a b c", "a b c d"], n=5)
    assert np.array_equal(again[0], sets[1]) and not np.array_equal(again[1], sets[1])
    for s in sets:
        assert s.dtype == np.uint32 and np.all(np.diff(s.astype(np.int64)) > 0)  # sorted, unique
    # repeated n-grams count once
    assert len(_sets(["x y x y x y x y"], n=2)[0]) == 2


def test_shingles_do_not_depend_on_the_batch():
    rng = random.Random(3)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40))) for _ in range(60)]
    for kind in ("word", "char"):
        whole = _sets(texts, 4, kind)
        alone = [_sets([t], 4, kind)[0] for t in texts]
        shuffled_order = list(reversed(texts))
        rev = list(reversed(_sets(shuffled_order, 4, kind)))
        for a, b, c in zip(whole, alone, rev):
            assert np.array_equal(a, b) and np.array_equal(a, c)


def test_scripts_without_spaces_are_tokenized_per_character():
    zh = shingle_text("请把这段文字翻译成英文", "")
    assert len(_sets([zh], n=2)[0]) == len(zh) - 1  # 11 characters -> 10 character bigrams
    mixed = shingle_text("日本語のテキスト and English words", "")
    assert len(_sets([mixed], n=3)[0]) == (8 + 3) - 3 + 1  # 8 characters + 3 words = 11 tokens
    thai = shingle_text("ภาษาไทยง่ายมาก", "")
    assert len(_sets([thai], n=3)[0]) == len(thai) - 2
    # one edit in a long Chinese text keeps a high Jaccard (per-character tokens)
    a = "今天天气很好我们一起去公园散步然后去图书馆看书最后回家吃晚饭"
    b = a.replace("图书馆", "博物馆")
    assert 0.6 < true_jaccard(a, b, 3) < 1.0
    assert true_jaccard(a, b, 3) == pytest.approx(_jacc(a, b, 3), abs=1e-12)
    # Hangul is written with spaces: words stay words
    ko = shingle_text("오늘 날씨가 정말 좋네요", "")
    assert len(_sets([ko], n=2)[0]) == 3


def test_char_shingles():
    sets = _sets(["abcdef", "ab", "", "aaaaaa"], n=3, kind="char")
    assert [len(s) for s in sets] == [4, 1, 0, 1]


def _jacc(a: str, b: str, n: int = 5, kind: str = "word") -> float:
    off, vals = shingle_sets([a, b], n, kind)
    return float(jaccard_sets(off[:2], vals[: off[1]], off[1:] - off[1], vals[off[1]:])[0])


def test_hashed_jaccard_equals_string_jaccard():
    rng = random.Random(7)
    for _ in range(150):
        base = [rng.choice(WORDS) for _ in range(rng.randint(1, 60))]
        other = _edit(rng, base, rng.choice([0.0, 0.05, 0.2, 0.5]))
        a, b = " ".join(base), " ".join(other)
        for n, kind in ((5, "word"), (2, "word"), (4, "char")):
            assert _jacc(a, b, n, kind) == pytest.approx(true_jaccard(a, b, n, kind), abs=1e-12)


def test_jaccard_sets_vectorized_over_pairs():
    rng = np.random.default_rng(0)
    a_sets = [np.unique(rng.integers(0, 50, rng.integers(0, 30))).astype(np.uint32) for _ in range(40)]
    b_sets = [np.unique(rng.integers(0, 50, rng.integers(0, 30))).astype(np.uint32) for _ in range(40)]
    ao = np.concatenate(([0], np.cumsum([len(s) for s in a_sets])))
    bo = np.concatenate(([0], np.cumsum([len(s) for s in b_sets])))
    got = jaccard_sets(ao, np.concatenate(a_sets), bo, np.concatenate(b_sets))
    for g, a, b in zip(got, a_sets, b_sets):
        sa, sb = set(a.tolist()), set(b.tolist())
        assert g == pytest.approx(len(sa & sb) / len(sa | sb) if sa | sb else 0.0)
    # int32 views (what Spark stores) give the same answer
    got32 = jaccard_sets(ao, np.concatenate(a_sets).view(np.int32), bo, np.concatenate(b_sets).view(np.int32))
    assert np.array_equal(got, got32)


def test_signatures_are_fixed_deterministic_and_batch_independent():
    off, vals = shingle_sets(["the quick brown fox jumps over the lazy dog"])
    sig = signatures(off, vals, 8)
    # pinned: signatures (hence band keys and results) must not change between versions
    assert sig[0].tolist() == [22032701, 504452423, 162741429, 181750595, 150599541, 203892306,
                               495022528, 345456984]
    texts = ["one two three four five six", "", "seven eight nine ten eleven twelve thirteen"]
    off, vals = shingle_sets(texts)
    sig = signatures(off, vals, 64)
    assert np.all(sig[1] == EMPTY)
    for i, t in enumerate(texts):
        o, v = shingle_sets([t])
        assert np.array_equal(signatures(o, v, 64)[0], sig[i])
    # chunking (many shingles in one text) does not change the minimum
    long_text = " ".join(f"w{i}" for i in range(20_000))
    o, v = shingle_sets([long_text, "w1 w2 w3 w4 w5"])
    s = signatures(o, v, 16)
    o1, v1 = shingle_sets(["w1 w2 w3 w4 w5"])
    assert np.array_equal(s[1], signatures(o1, v1, 16)[0])


def test_minhash_estimate_is_unbiased():
    rng = random.Random(11)
    errors, trues = [], []
    for _ in range(300):
        base = [rng.choice(WORDS) + str(rng.randint(0, 50)) for _ in range(rng.randint(40, 120))]
        other = _edit(rng, base, rng.choice([0.02, 0.05, 0.1, 0.2]))
        a, b = " ".join(base), " ".join(other)
        off, vals = shingle_sets([a, b])
        sig = signatures(off, vals, 128)
        j = true_jaccard(a, b)
        errors.append(float(estimate_jaccard(sig[0], sig[1])) - j)
        trues.append(j)
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.01  # unbiased
    expected_sd = np.sqrt(np.mean([j * (1 - j) / 128 for j in trues]))
    assert errors.std() < 1.3 * expected_sd  # no worse than independent permutations


def test_band_keys():
    off, vals = shingle_sets(["a b c d e f g h", "a b c d e f g h", "z y x w v u t s"])
    sig = signatures(off, vals, 128)
    keys = band_keys(sig, 16, 8)
    assert keys.shape == (3, 16) and keys.dtype == np.int64
    assert np.array_equal(keys[0], keys[1]) and not np.any(keys[0] == keys[2])
    # same values in two different bands give different keys (bands are salted)
    same = np.zeros((1, 16), dtype=np.uint32)
    k = band_keys(same, 2, 8)
    assert k[0, 0] != k[0, 1]
    with pytest.raises(ValueError):
        band_keys(sig, 20, 8)


def test_lsh_candidate_rate_matches_theory():
    rng = random.Random(5)
    hits, probs = 0, []
    for _ in range(400):
        base = [rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(80)]
        other = _edit(rng, base, 0.08)
        a, b = " ".join(base), " ".join(other)
        off, vals = shingle_sets([a, b])
        keys = band_keys(signatures(off, vals, 128), 16, 8)
        hits += bool(np.any(keys[0] == keys[1]))
        probs.append(float(candidate_probability(true_jaccard(a, b), 16, 8)))
    expected = sum(probs)
    assert abs(hits - expected) < 4 * np.sqrt(sum(p * (1 - p) for p in probs)) + 2


def test_optimal_bands():
    # with equal weights it is the classic choice (as datasketch computes it)
    assert optimal_bands(0.8, 128, 0.5, 0.5) == (9, 13)
    assert optimal_bands(0.5, 128, 0.5, 0.5) == (25, 5)
    assert optimal_bands(0.9, 256, 0.5, 0.5) == (9, 28)
    # the default weights favour recall (candidates are verified): 0.85-similar pairs are found
    b, r = optimal_bands(0.8, 128)
    assert (b, r) == (16, 8) and candidate_probability(0.85, b, r) > 0.99
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        for p in (32, 128, 256):
            b, r = optimal_bands(t, p)
            assert b * r <= p
    assert optimal_bands(0.95, 128)[1] > optimal_bands(0.6, 128)[1]  # stricter -> longer bands
    assert bands_rows(0.8, 128, 32) == (32, 4) and bands_rows(0.8, 128) == (16, 8)
    with pytest.raises(ValueError):
        bands_rows(0.8, 128, 200)
    s = np.linspace(0, 1, 11)
    p = candidate_probability(s, 16, 8)
    assert p[0] == 0 and p[-1] == 1 and np.all(np.diff(p) >= 0)


def test_megabyte_rows():
    rng = random.Random(1)
    big = " ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(180_000))  # ~1 MB
    assert len(big) > 1_000_000
    nospace = "x" * 1_000_000  # one 1 MB token
    for kind, n in (("word", 5), ("char", 5)):  # how fast: benchmarks/bench_near_dedup.py (robust)
        off, vals = shingle_sets([big, nospace, "tiny text"], n, kind)
        sig = signatures(off, vals, 128)
        assert sig.shape == (3, 128) and not np.any(sig == EMPTY)
