"""MinHash LSH maths for near-duplicate detection.  Pure numpy over whole batches, no engines.

Pipeline of one batch of texts (every step is a numpy pass over the whole batch; there is no
per-row Python loop over permutations or shingles):

1. :func:`shingle_text` - the text that is compared: ``dedup_key_text(instruction)`` and
   ``dedup_key_text(input)`` joined by a space (NFKC, casefolded, no punctuation or symbols,
   single spaces), so case, spacing and punctuation never matter.
2. :func:`shingle_sets` - the set of n-gram shingles of each text, as sorted unique **32-bit**
   hashes.  ``kind="word"``: n-grams of tokens; tokens are space-separated words, except that
   every character of a script written without spaces (Han, Hiragana, Katakana, Thai, Lao,
   Khmer, Myanmar, Tibetan) is a token of its own.  ``kind="char"``: n-grams of Unicode code
   points (spaces included).  A text with fewer than ``n`` tokens gets exactly one shingle (the
   whole token sequence), so short texts still have a signature (and match only a text with the
   same token sequence).  A text with no token at all has an empty set: it is never a candidate.
   Hashing: tokens and n-grams use a polynomial hash modulo 2^64 finished with the splitmix64
   mixer; the top 32 bits are the shingle hash.  Deterministic across processes and machines
   (no Python ``hash()``).  Two different shingles share a hash with probability 2^-32, so the
   Jaccard of two hashed sets equals that of the string sets up to ~|A|*|B|/2^32 (negligible).
3. :func:`signatures` - MinHash: for permutation ``i``, ``h_i(x) = ((a_i*x + b_i) mod 2^64) >> 32``
   on the 32-bit shingle hash ``x`` with random 64-bit ``a_i, b_i`` (multiply-add-shift,
   a 2-independent family; values are 32-bit, a signature is ``num_perm`` uint32).  The
   parameters come from splitmix64 of a fixed seed, so signatures never change between runs.
4. :func:`band_keys` - the first ``bands*rows`` values cut into ``bands`` bands of ``rows``
   values, each band hashed to a 64-bit key (salted with its band index).  Two texts are
   candidates when any band key is equal: probability ``1-(1-s^rows)^bands`` at Jaccard ``s``.
5. :func:`optimal_bands` - ``(bands, rows)`` minimizing the weighted area of false positives
   (below the threshold) and false negatives (above it).
6. :func:`jaccard_sets` / :func:`estimate_jaccard` - true Jaccard of two hashed shingle sets
   (vectorized over many pairs) and its MinHash estimate.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np

U64 = np.uint64
SEED = 0x5E1EC711  # fixed: signatures and band keys are identical in every run and process
FP_WEIGHT = 0.05 # optimal_bands: weight of false positives (candidates are verified: cheap)
FN_WEIGHT = 0.95 # ... and of false negatives (a missed pair is never recovered)
_CHUNK = 1024  # shingles per (chunk x num_perm) uint64 block in signatures() (1 MB: stays in cache)

_GOLDEN = U64(0x9E3779B97F4A7C15)
_M1 = U64(0xBF58476D1CE4E5B9)
_M2 = U64(0x94D049BB133111EB)
_POLY = U64(0x100000001B3)  # odd multiplier of the polynomial hashes (FNV-64 prime)
_MASK32 = U64(0xFFFFFFFF)
EMPTY = np.uint32(0xFFFFFFFF)  # signature value of a text without shingles

# scripts written without spaces between words: every character is a word token
_NOSPACE_RE = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff]"
)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on a uint64 array (wrapping arithmetic), a bijection."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=U64) + _GOLDEN
        z = (z ^ (z >> U64(30))) * _M1
        z = (z ^ (z >> U64(27))) * _M2
        return z ^ (z >> U64(31))


# ----------------------------------------------------------------------------- what is compared
# ASCII characters that dedup_key_text drops (categories P*, S*, Cf): string.punctuation
_ASCII_DROP = bytes(c for c in range(128) if unicodedata.category(chr(c))[0] in "PS"
                    or unicodedata.category(chr(c)) == "Cf")


def key_text(s: str | None) -> str:
    """``selectllm.text.normalize.dedup_key_text`` with a fast path for ASCII text (same result)."""
    if not s:
        return ""
    if s.isascii():  # NFKC is the identity and casefold is lower() on ASCII
        return " ".join(s.encode("ascii").translate(None, _ASCII_DROP).decode("ascii").lower().split())
    from selectllm.text.normalize import dedup_key_text

    return dedup_key_text(s)


def shingle_text(instruction: str | None, input: str | None = "") -> str:  # noqa: A002 - column name
    """The normalized text that is shingled: dedup keys of instruction and input, space-joined."""
    a, b = key_text(instruction), key_text(input)
    return f"{a} {b}" if a and b else a or b


def _segment(s: str) -> str:
    """Word tokens separated by single spaces; no-space scripts are split per character."""
    if s.isascii() or not _NOSPACE_RE.search(s):
        return s
    return " ".join(_NOSPACE_RE.sub(r" \g<0> ", s).split())


# ----------------------------------------------------------------------------- shingles
_pow_cache = np.ones(1, dtype=U64)


def _powers(n: int) -> np.ndarray:
    """_POLY**k mod 2^64 for k < n (cached, grown on demand)."""
    global _pow_cache
    if len(_pow_cache) < n:
        with np.errstate(over="ignore"):
            p = np.full(max(n, 2 * len(_pow_cache)), _POLY, dtype=U64)
            p[0] = 1
            _pow_cache = np.cumprod(p, dtype=U64)
    return _pow_cache[:n]


def _word_symbols(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit token hashes of the whole batch in order, tokens per text).

    Tokens are the non-empty pieces between single spaces (texts are normalized).  Arrow splits
    and dictionary-encodes them, so each distinct token of the batch is hashed once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    r = len(texts)
    tokens = pc.split_pattern(pa.array([_segment(t) for t in texts], pa.large_string()), " ")
    per_text = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
    coded = pc.dictionary_encode(pc.list_flatten(tokens))
    words, idx = coded.dictionary, coded.indices.to_numpy(zero_copy_only=False)
    if len(words) == 0:
        return np.zeros(0, U64), np.zeros(r, np.int64)
    width = np.int64 if pa.types.is_large_string(words.type) else np.int32
    off = np.frombuffer(words.buffers()[1], width)[words.offset:words.offset + len(words) + 1].astype(np.int64)
    data = words.buffers()[2]
    buf = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    word_hash = np.zeros(len(words), U64)
    real = np.flatnonzero(np.diff(off) > 0)  # "" comes from empty texts and repeated spaces
    if real.size:
        word_hash[real] = _byte_string_hashes(off[real], off[real + 1], buf)
    keep = np.diff(off)[idx] > 0
    row = np.repeat(np.arange(r), per_text)[keep]
    return word_hash[idx][keep], np.bincount(row, minlength=r).astype(np.int64)


def _byte_string_hashes(starts: np.ndarray, ends: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """64-bit hashes of the non-empty byte strings ``buf[starts[i]:ends[i]]``: a polynomial over
    the bytes modulo 2^64, length-salted, finished with splitmix64."""
    lens = ends - starts
    first = np.concatenate(([0], np.cumsum(lens)[:-1]))
    pos = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(first, lens)  # byte index in its string
    with np.errstate(over="ignore"):
        terms = (buf[np.repeat(starts, lens) + pos].astype(U64) + U64(1)) * _powers(int(lens.max()))[pos]
        h = np.add.reduceat(terms, first)  # wraps modulo 2^64
        return splitmix64(h ^ (lens.astype(U64) * _GOLDEN))


def _char_symbols(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code points of the whole batch in order, code points per text)."""
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    return cps.astype(U64), lens


def _ngrams(sym: np.ndarray, lens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(text index, 32-bit hash) of every n-gram of every text; one shingle for 0 < len < n."""
    r = len(lens)
    off = np.concatenate(([0], np.cumsum(lens)))
    total = len(sym)
    h = sym.copy()
    short = (lens > 0) & (lens < n)
    short_h = np.zeros(r, U64)
    with np.errstate(over="ignore"):
        for k in range(n):  # after step k, h[i] is the hash of sym[i .. i+k]
            if 0 < k < total:
                h[: total - k] *= _POLY
                h[: total - k] += sym[k:]
            sel = short & (lens == k + 1)
            if sel.any():
                short_h[sel] = h[off[:-1][sel]]
        count = np.maximum(lens - n + 1, 0)
        n_win = int(count.sum())
        base = np.repeat(off[:-1] - np.concatenate(([0], np.cumsum(count)[:-1])), count)
        win = np.arange(n_win, dtype=np.int64) + base
        rows = np.concatenate((np.repeat(np.arange(r), count), np.flatnonzero(short)))
        vals = np.concatenate((h[win] + U64(n) * _GOLDEN,
                               short_h[short] + lens[short].astype(U64) * _GOLDEN))
    return rows.astype(np.int64), (splitmix64(vals) >> U64(32)).astype(np.uint32)


def shingle_sets(texts: Sequence[str], ngram: int = 5, kind: str = "word") -> tuple[np.ndarray, np.ndarray]:
    """Shingle sets of a batch of (already normalized) texts: ``(offsets, values)``.

    ``values[offsets[i]:offsets[i+1]]`` is the sorted set of unique uint32 shingle hashes of
    ``texts[i]`` (empty when the text has no token).  ``offsets`` is int64 of length
    ``len(texts)+1``.
    """
    if ngram < 1:
        raise ValueError("ngram must be >= 1")
    if kind == "word":
        sym, lens = _word_symbols(texts)
    elif kind == "char":
        sym, lens = _char_symbols(texts)
    else:
        raise ValueError(f"unknown shingle kind {kind!r} (word|char)")
    rows, vals = _ngrams(sym, lens, ngram)
    key = (rows.astype(U64) << U64(32)) | vals.astype(U64)
    key.sort()  # by (text, hash); then drop repeats
    key = key[np.concatenate(([True], key[1:] != key[:-1]))] if key.size else key
    rows, vals = (key >> U64(32)).astype(np.int64), (key & _MASK32).astype(np.uint32)
    offsets = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=len(texts))))).astype(np.int64)
    return offsets, vals


# ----------------------------------------------------------------------------- signatures
def permutations(num_perm: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` uint64 parameters of the ``num_perm`` hash functions (deterministic)."""
    i = np.arange(2 * num_perm, dtype=U64) + U64(seed)
    ab = splitmix64(splitmix64(i))
    return ab[0::2].copy(), ab[1::2].copy()


def signatures(offsets: np.ndarray, values: np.ndarray, num_perm: int = 128, seed: int = SEED) -> np.ndarray:
    """MinHash signatures ``uint32 (n_texts, num_perm)`` of shingle sets from :func:`shingle_sets`.

    A text without shingles gets :data:`EMPTY` everywhere.  Work is done in blocks of
    ``_CHUNK`` shingles x ``num_perm`` (multiply, add, shift, segment-min over whole arrays).
    """
    n = len(offsets) - 1
    a, b = permutations(num_perm, seed)
    sig = np.full((n, num_perm), EMPTY, dtype=np.uint32)
    counts = np.diff(offsets)
    rows = np.repeat(np.arange(n, dtype=np.int64), counts)
    x = values.astype(U64)
    with np.errstate(over="ignore"):
        for c0 in range(0, len(x), _CHUNK):
            xc, rc = x[c0:c0 + _CHUNK], rows[c0:c0 + _CHUNK]
            t = np.multiply.outer(xc, a)
            t += b
            t >>= U64(32)
            seg = np.flatnonzero(np.concatenate(([True], rc[1:] != rc[:-1])))
            mins = np.minimum.reduceat(t, seg, axis=0).astype(np.uint32)
            r = rc[seg]
            sig[r] = np.minimum(sig[r], mins)
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """int64 ``(n_texts, bands)``: band ``j`` hashes ``sig[:, j*rows:(j+1)*rows]`` (salted by j)."""
    n, p = sig.shape
    if bands * rows > p:
        raise ValueError(f"bands*rows = {bands * rows} > num_perm = {p}")
    s = sig[:, : bands * rows].reshape(n, bands, rows).astype(U64)
    h = np.broadcast_to(splitmix64(np.arange(bands, dtype=U64) + U64(SEED)), (n, bands)).copy()
    for j in range(rows):
        h = splitmix64(h ^ s[:, :, j])
    return h.view(np.int64)


# ----------------------------------------------------------------------------- (bands, rows)
def candidate_probability(s, bands: int, rows: int):
    """Probability that two texts of Jaccard ``s`` share at least one band."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = FP_WEIGHT,
                  fn_weight: float = FN_WEIGHT) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands*rows <= num_perm`` minimizing
    ``fp_weight * int_0^t P(s) ds + fn_weight * int_t^1 (1-P(s)) ds``, ``P = candidate_probability``.

    Ties go to fewer permutations used, then to more bands.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    grid = np.linspace(0.0, 1.0, 2001)
    below, above = grid <= threshold, grid >= threshold
    best: tuple[float, int, int, int] | None = None
    for r in range(1, num_perm + 1):
        b = np.arange(1, num_perm // r + 1)
        p = 1.0 - (1.0 - grid[None, :] ** r) ** b[:, None]
        fp = np.trapezoid(np.where(below, p, 0.0), grid, axis=1)
        fn = np.trapezoid(np.where(above, 1.0 - p, 0.0), grid, axis=1)
        err = fp_weight * fp + fn_weight * fn
        for bi, e in zip(b.tolist(), err.tolist()):
            cand = (round(e, 12), bi * r, -bi, r)
            if best is None or cand < best:
                best = cand
    assert best is not None
    return -best[2], best[3]


def bands_rows(threshold: float, num_perm: int, bands: int | None = None) -> tuple[int, int]:
    """``(bands, rows)``: from :func:`optimal_bands`, or ``rows = num_perm // bands`` when given."""
    if bands is None:
        return optimal_bands(threshold, num_perm)
    if not 1 <= bands <= num_perm:
        raise ValueError(f"dedup.near.bands must be between 1 and num_perm ({num_perm})")
    return bands, num_perm // bands


# ----------------------------------------------------------------------------- similarity
def jaccard_sets(a_offsets: np.ndarray, a_values: np.ndarray, b_offsets: np.ndarray,
                 b_values: np.ndarray) -> np.ndarray:
    """Jaccard of pairs of shingle sets, vectorized: pair ``i`` is ``A[i]`` vs ``B[i]``.

    Each set must hold unique values (as :func:`shingle_sets` gives).  The ``pair << 32 | value``
    keys of both sides are merged with one stable sort (linear when the sets are sorted, as
    :func:`shingle_sets` gives them) and equal neighbours counted.  int32 views of the uint32
    values are accepted.  Two empty sets give 0.0.
    """
    na, nb = np.diff(a_offsets), np.diff(b_offsets)
    keys = np.concatenate((_pair_keys(na, a_values), _pair_keys(nb, b_values)))
    keys.sort(kind="stable")  # two sorted runs (sorted sets): a linear merge
    common = np.flatnonzero(keys[1:] == keys[:-1])  # a value in both sets of a pair
    inter = np.bincount((keys[common] >> U64(32)).astype(np.int64), minlength=len(na))
    union = na + nb - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _pair_keys(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``pair << 32 | value`` (uint64) for the concatenated sets of consecutive pairs."""
    v = np.asarray(values)
    if v.dtype.itemsize == 4 and v.dtype != np.uint32:
        v = v.view(np.uint32)
    keys = np.repeat(np.arange(len(counts), dtype=U64) << U64(32), counts)
    keys |= v
    return keys


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """MinHash estimate of the Jaccard of each row pair (fraction of equal values)."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


def true_jaccard(a: str, b: str, ngram: int = 5, kind: str = "word") -> float:
    """Reference Jaccard of two normalized texts' shingle *string* sets (slow; for tests/benchmarks)."""
    return float(len((sa := _string_shingles(a, ngram, kind)) & (sb := _string_shingles(b, ngram, kind)))
                 / max(len(sa | sb), 1))


def _string_shingles(text: str, ngram: int, kind: str) -> set:
    toks = _segment(text).split() if kind == "word" else list(text)
    if not toks:
        return set()
    if len(toks) < ngram:
        return {tuple(toks)}
    return {tuple(toks[i:i + ngram]) for i in range(len(toks) - ngram + 1)}
