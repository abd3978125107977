"""The bundled sample corpus (examples/sample.jsonl) matches its manifest and its generator.

Fast: no Spark, no Ray.  Each line is classified here with an independent reference of the dedup
rules (quarantine reasons, exact-duplicate key), and the counts are compared with the manifest
that the dedup stage's tests rely on.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SAMPLE = EXAMPLES / "sample.jsonl"
MANIFEST = EXAMPLES / "sample_manifest.json"
GENERATOR = EXAMPLES / "make_sample.py"
MAX_CHARS = 20_000  # dedup.max_chars default
REASONS = ("malformed", "empty", "too_long", "bad_encoding", "missing_field")


def norm(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).casefold()
    s = "".join(ch for ch in s if not unicodedata.category(ch).startswith(("P", "S")))
    return " ".join(s.split())


def key(rec: dict) -> str:
    return norm(rec["instruction"]) + "\n" + norm(rec.get("input") or "")


def word_shingles(rec: dict, n: int = 5) -> set:
    w = (norm(rec["instruction"]) + " " + norm(rec.get("input") or "")).split()
    return {tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


def classify(raw: bytes) -> tuple[str, dict | None]:
    """'ok' or the quarantine reason of one line, with the parsed record."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_encoding", None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "malformed", None
    if not isinstance(obj, dict):
        return "malformed", None
    if not isinstance(obj.get("instruction"), str):
        return "missing_field", None
    if not obj["instruction"].strip():
        return "empty", None
    if len(obj["instruction"]) + len(obj.get("input") or "") > MAX_CHARS:
        return "too_long", None
    return "ok", obj


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    data = SAMPLE.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


@pytest.fixture(scope="module")
def parsed(lines) -> list[tuple[str, dict | None]]:
    return [classify(b) for b in lines]


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_sample", GENERATOR)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generator_is_deterministic_and_matches_committed_files(tmp_path):
    mod = _load_generator()
    mod.write_sample(tmp_path)
    assert (tmp_path / "sample.jsonl").read_bytes() == SAMPLE.read_bytes()
    assert (tmp_path / "sample_manifest.json").read_bytes() == MANIFEST.read_bytes()


def test_generator_uses_only_the_standard_library():
    tree = ast.parse(GENERATOR.read_text(encoding="utf-8"))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert mods <= set(sys.stdlib_module_names) | {"__future__"}, mods - set(sys.stdlib_module_names)


def test_size_and_line_counts(manifest, lines):
    data = SAMPLE.read_bytes()
    assert len(data) <= 2_000_000
    assert manifest["bytes"] == len(data)
    assert manifest["total_lines"] == len(lines)
    assert all(lines), "no blank lines"
    longest = max(lines, key=len)
    assert len(longest) >= 900_000
    assert len(data) - len(longest) < 950_000


def test_bad_lines_match_manifest(manifest, parsed):
    found = {r: [] for r in REASONS}
    for i, (reason, _) in enumerate(parsed):
        if reason != "ok":
            found[reason].append(i)
    assert found == manifest["bad_lines"]
    assert {r: len(v) for r, v in found.items()} == manifest["quarantined_by_reason"]
    assert sum(len(v) for v in found.values()) == manifest["quarantined"]
    for r in REASONS:
        assert len(found[r]) >= (1 if r == "too_long" else 2), r
    assert len(found["too_long"]) == 1


def test_bad_encoding_lines_are_otherwise_valid_records(manifest, lines):
    """Only the bytes are wrong: decoded leniently they are proper records (so the reason is unambiguous)."""
    for i in manifest["bad_lines"]["bad_encoding"]:
        obj = json.loads(lines[i].decode("utf-8", errors="replace"))
        assert isinstance(obj, dict) and obj["instruction"].strip()


def test_exact_duplicates(manifest, lines, parsed):
    first: dict[str, int] = {}
    dups = []
    for i, (reason, rec) in enumerate(parsed):
        if reason != "ok":
            continue
        k = key(rec)
        if k in first:
            dups.append([first[k], i])
        else:
            first[k] = i
    assert dups == manifest["exact_duplicate_pairs"]
    assert len(dups) == manifest["exact_duplicates"] >= 100
    for o, d in dups:
        assert lines[o] != lines[d]  # the bytes differ: case, whitespace, punctuation
        assert key(parsed[o][1]) == key(parsed[d][1])
    # unique valid records = the normal ones + the near duplicates
    assert len(first) == manifest["valid_unique"] + manifest["near_duplicates"]


def test_near_duplicates(manifest, parsed):
    pairs = manifest["near_duplicate_pairs"]
    assert len(pairs) == manifest["near_duplicates"] >= 100
    assert len(manifest["near_duplicate_jaccard"]) == len(pairs)
    dup_lines = {d for _, d in manifest["exact_duplicate_pairs"]}
    for o, d in pairs:
        assert o < d
        assert parsed[o][0] == parsed[d][0] == "ok"
        assert o not in dup_lines and d not in dup_lines
        a, b = parsed[o][1], parsed[d][1]
        assert key(a) != key(b)
        assert len((norm(a["instruction"]) + " " + norm(a["input"])).split()) >= 12
        sa, sb = word_shingles(a), word_shingles(b)
        assert len(sa & sb) / len(sa | sb) >= 0.85


def test_expected_stats_add_up(manifest):
    q = manifest["quarantined"]
    for name, s in manifest["expected_stats"].items():
        assert s["read"] == manifest["total_lines"]
        assert s["quarantined"] == q
        assert s["read"] == s["kept"] + s["exact_duplicates"] + s["near_duplicates"] + s["quarantined"], name
    exact_only = manifest["expected_stats"]["exact_only"]
    assert exact_only["kept"] == manifest["valid_unique"] + manifest["near_duplicates"]
    assert exact_only["near_duplicates"] == 0
    both = manifest["expected_stats"]["exact_and_near"]
    assert both["kept"] == manifest["valid_unique"]
    assert both["near_duplicates"] == manifest["near_duplicates"]


def test_variety(manifest, parsed):
    assert manifest["valid_unique"] >= 3000
    types = manifest["task_types"]
    assert sum(1 for c in types.values() if c > 0) >= 10
    assert sum(types.values()) == manifest["valid_unique"]
    valid = [rec for reason, rec in parsed if reason == "ok"]
    assert all(set(r) == {"instruction", "input", "output"} for r in valid)
    words = sorted(len(r["instruction"].split()) for r in valid)
    assert words[len(words) // 20] <= 6 and words[-len(words) // 20] >= 25  # one-liners to detailed ones
    assert 0.2 < sum(1 for r in valid if r["input"]) / len(valid) < 0.8
    # no format characters (Cf): a pipeline that also drops them gets the same keys
    assert not any(unicodedata.category(ch) == "Cf" for r in valid for f in ("instruction", "input") for ch in r[f])


def test_planted_rows_are_interleaved(manifest):
    n = manifest["total_lines"]
    planted = sorted([d for _, d in manifest["exact_duplicate_pairs"]] + [d for _, d in manifest["near_duplicate_pairs"]]
                     + [i for v in manifest["bad_lines"].values() for i in v])
    assert planted[0] < n // 10 and n // 4 < planted[len(planted) // 2] < 3 * n // 4
    assert n - planted[-1] < n // 10
    assert all(b - a < n // 10 for a, b in zip(planted, planted[1:]))  # no long stretch without any
