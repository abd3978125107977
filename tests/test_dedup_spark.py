"""The dedup stage on Spark (session fixture ``spark``: local[2]) over a small synthetic corpus.

The oracle here is exact dedup, so near dedup (on by default) is switched off (``EXACT_ONLY``);
tests/test_near_dedup_spark.py covers it."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from rich.console import Console

from selectllm import schemas
from selectllm.config import load_config
from selectllm.errors import UserError
from selectllm.text.formats import iter_records
from selectllm.text.normalize import content_id

from helpers import stage_ctx

ROOT = Path(__file__).resolve().parents[1]
EXACT_ONLY = "dedup.near.enabled=false"


def _corpus(root: Path) -> list[str]:
    """Five files in five formats with duplicates inside and across files, and bad records."""
    root.mkdir(parents=True, exist_ok=True)
    topics = ["the moon", "tea", "rivers", "taxes", "sorting", "birds", "jazz", "volcanoes"]
    base = [{"instruction": f"Write a short note about {t}.", "input": ""} for t in topics]
    base.append({"instruction": "Translate the sentence", "input": "Good morning"})
    a = base[:5] + [
        {"instruction": "WRITE a short note about the moon!!", "input": ""},  # dup of a[0]
        {"instruction": "write a short   note about tea", "input": None},  # dup of a[1]
    ]
    lines = [json.dumps(r).encode() for r in a]
    lines += [b"{broken", b'{"instruction": ""}', b'{"input": "x"}', b'{"instruction": "caf\xe9"}',
              b'{"instruction": "' + b"long " * 40 + b'"}', b'{"instruction": {"nested": "object"}}']
    (root / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n\n")
    (root / "b.json").write_text(json.dumps(base[4:] + [{"instruction": "Write a short note about Jazz"}, 7]))
    pq.write_table(pa.table({
        "instruction": [r["instruction"] for r in base[::2]] + ["A brand new parquet task"],
        "input": [r["input"] for r in base[::2]] + [""],
    }), root / "c.parquet")
    (root / "d.csv.gz").write_bytes(gzip.compress(
        b"instruction,input\nTranslate the sentence,Good   morning\nSorting: explain quicksort,\nbad,row,extra\n"))
    (root / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        b"".join(json.dumps(r).encode() + b"\n" for r in base[1:4] + [{"instruction": "zst only"}])))
    return [str(root / n) for n in ("a.jsonl", "b.json", "c.parquet", "d.csv.gz", "e.jsonl.zst")]


def _expected(files: list[str], max_chars: int) -> dict:
    """The counts computed directly in Python, without Spark."""
    reasons, ids = Counter(), Counter()
    read = 0
    for f in files:
        for _, _, instr, inp, reason in iter_records(f, max_chars=max_chars):
            read += 1
            if reason:
                reasons[reason] += 1
            else:
                ids[content_id(instr, inp)] += 1
    return {"read": read, "kept": len(ids), "exact_duplicates": sum(ids.values()) - len(ids),
            "quarantined": {r: reasons.get(r, 0) for r in schemas.QUARANTINE_REASONS}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    return _corpus(tmp_path_factory.mktemp("corpus"))


def _paths(files: list[str]) -> str:
    return "input.paths=[" + ", ".join(files) + "]"


def test_stage_outputs_counts_and_schemas(spark, corpus, tmp_path):
    from selectllm.dedup.stage import run_stage

    ctx = stage_ctx(tmp_path / "run", "dedup", EXACT_ONLY, _paths(corpus), "dedup.max_chars=120")
    counts = run_stage(ctx)
    out = Path(ctx.out)
    stats = json.loads((out / "stats.json").read_text())
    expected = _expected(corpus, 120)

    # conservation and the exact figures
    assert stats["read"] == stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"] + \
        stats["quarantined_total"]
    assert stats["quarantined_total"] == sum(stats["quarantined"].values())
    for key in ("read", "kept", "exact_duplicates", "quarantined"):
        assert stats[key] == expected[key], key
    assert stats["near_duplicates"] == 0 and stats["files"] == 5
    held = ("malformed", "empty", "too_long", "bad_encoding", "missing_field", "wrong_type")  # not the chat ones
    assert all(stats["quarantined"][r] > 0 for r in held), stats
    assert stats["unreadable_files"] == [] and stats["quarantined"]["unreadable"] == 0
    assert counts["read"] == stats["read"] and counts["kept"] == stats["kept"]
    assert counts["quarantined_total"] == stats["quarantined_total"]
    assert counts["quarantined_malformed"] == stats["quarantined"]["malformed"]

    # layout: part files directly in the stage folder; no Spark markers or checksums anywhere
    parts = sorted(out.glob("part-*.parquet"))
    assert parts and all(p.name == f"part-{i:05d}.parquet" for i, p in enumerate(parts))
    for dirpath, _, names in os.walk(out):
        for n in names:
            assert not n.startswith(("_", ".")) and not n.endswith(".crc"), os.path.join(dirpath, n)
    assert {p.name for p in out.iterdir()} == {p.name for p in parts} | {
        "stats.json", "quarantine", "duplicates.parquet"}

    # schemas, exactly
    for p in parts:
        assert pq.read_schema(p).equals(pa.schema([*schemas.DEDUP, schemas.FINDINGS]), check_metadata=False), \
            pq.read_schema(p)  # privacy on by default: what was masked in the row
    kept = pa.concat_tables([pq.read_table(p) for p in parts])
    quarantine = pq.read_table(out / "quarantine")
    dups = pq.read_table(out / "duplicates.parquet")
    assert quarantine.schema.equals(schemas.QUARANTINE, check_metadata=False)
    assert dups.schema.equals(schemas.DUPLICATES, check_metadata=False)
    assert kept.num_rows == stats["kept"] and dups.num_rows == stats["exact_duplicates"]
    assert quarantine.num_rows == stats["quarantined_total"]

    # kept: unique ids, sorted across the part files in name order, the text rendered
    k = kept.to_pylist()
    ids = [r["id"] for r in k]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for r in k:
        assert r["id"] == content_id(r["instruction"], r["input"])
        assert r["text"].startswith("### Instruction: " + r["instruction"])
        assert ("### Input: " in r["text"]) == bool(r["input"])
    # the keeper of an id is its smallest (source, source_row)
    d = dups.to_pylist()
    by_id = {r["id"]: r for r in k}
    for r in d:
        assert r["duplicate_of"] == r["id"] and r["kind"] == "exact" and r["similarity"] == 1.0
        keeper = by_id[r["id"]]
        assert (keeper["source"], keeper["source_row"]) < (r["source"], r["source_row"])
    moon = content_id("Write a short note about the moon.", "")
    assert by_id[moon]["source"].endswith("a.jsonl") and by_id[moon]["source_row"] == 0
    q = quarantine.to_pylist()
    assert all(r["reason"] in schemas.QUARANTINE_REASONS and r["raw"] is not None for r in q)
    assert [(r["source"], r["source_row"]) for r in q] == sorted((r["source"], r["source_row"]) for r in q)


def test_same_ids_whatever_the_partitioning(spark, corpus):
    from selectllm.dedup.stage import dedup_dataframe

    cfg = load_config(None, [EXACT_ONLY, _paths(corpus), "dedup.max_chars=120"])
    seen = []
    for n in (1, 4):
        kept, quarantine, dups = dedup_dataframe(spark, cfg, num_partitions=n)
        rows = kept.select("id", "source", "source_row").collect()
        seen.append(sorted(tuple(r) for r in rows))
        assert kept.columns == schemas.DEDUP.names + [schemas.FINDINGS.name]  # privacy on by default
        assert quarantine.columns == schemas.QUARANTINE.names
        assert dups.columns == schemas.DUPLICATES.names
    assert seen[0] == seen[1] and len(seen[0]) == _expected(corpus, 120)["kept"]


def test_exact_off_keeps_every_good_row(spark, corpus):
    from selectllm.dedup.stage import dedup_dataframe

    cfg = load_config(None, [EXACT_ONLY, _paths(corpus), "dedup.max_chars=120", "dedup.exact=false"])
    kept, _, dups = dedup_dataframe(spark, cfg)
    e = _expected(corpus, 120)
    assert kept.count() == e["kept"] + e["exact_duplicates"] and dups.count() == 0


def test_unknown_format_is_a_user_error(spark, corpus, tmp_path):
    from selectllm.dedup.stage import dedup_dataframe

    odd = tmp_path / "data.bin"
    odd.write_text("x")
    with pytest.raises(UserError, match="input.format"):
        dedup_dataframe(spark, load_config(None, [_paths([str(odd)])]))


def test_sample_corpus_matches_its_manifest(spark, tmp_path):
    """examples/sample.jsonl (made by examples/make_sample.py) against the truth it was built with."""
    sample, manifest = ROOT / "examples" / "sample.jsonl", ROOT / "examples" / "sample_manifest.json"
    if not (sample.is_file() and manifest.is_file()):
        pytest.skip("examples/sample.jsonl or its manifest is not present")
    from selectllm.dedup.stage import run_stage

    want = json.loads(manifest.read_text())
    # the manifest is the raw corpus's truth: masking (a planted copy "farid@examplecom" of a row
    # with an email is no longer its exact duplicate once the email is a placeholder) is left out
    ctx = stage_ctx(tmp_path / "run", "dedup", EXACT_ONLY, f"input.paths=[{sample}]", "privacy.mode=off")
    counts = run_stage(ctx)
    out = Path(ctx.out)
    stats = json.loads((out / "stats.json").read_text())
    assert counts["read"] == stats["read"]
    exact_only = want["expected_stats"]["exact_only"]
    got = {k: stats[k] for k in ("read", "kept", "exact_duplicates", "near_duplicates")}
    got["quarantined"] = stats["quarantined_total"]
    assert got == exact_only
    by_reason = want["quarantined_by_reason"]  # the reasons the sample plants; the others are 0
    assert {r: n for r, n in stats["quarantined"].items() if r in by_reason or n} == by_reason
    # the very lines, each with its reason
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    assert sorted((r["reason"], r["source_row"]) for r in quarantine) == sorted(
        (reason, line) for reason, lines in want["bad_lines"].items() for line in lines)
    # planted exact duplicates: [original line, copy line]; the original is kept
    dup_rows = {r["source_row"] for r in pq.read_table(out / "duplicates.parquet").to_pylist()}
    assert dup_rows == {copy for _, copy in want["exact_duplicate_pairs"]}


def test_nothing_kept_still_writes_schemas(spark, tmp_path):
    from selectllm.dedup.stage import run_stage

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"instruction": ""}\n{oops\n')
    (tmp_path / "empty.jsonl").write_bytes(b"")
    ctx = stage_ctx(tmp_path / "run", "dedup", EXACT_ONLY, _paths([str(bad), str(tmp_path / "empty.jsonl")]))
    counts = run_stage(ctx)
    assert (counts["read"], counts["kept"], counts["quarantined_total"], counts["files"]) == (2, 0, 2, 2)
    out = Path(ctx.out)
    parts = sorted(out.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet"]
    assert pq.read_schema(parts[0]).equals(pa.schema([*schemas.DEDUP, schemas.FINDINGS]), check_metadata=False)
    dups = pq.read_table(out / "duplicates.parquet")
    assert dups.num_rows == 0 and dups.schema.equals(schemas.DUPLICATES, check_metadata=False)


def _split_corpus(root: Path) -> list[str]:
    """One JSONL, one CSV and one Parquet file, each large enough for many 2 KB splits, with
    duplicates across splits and bad lines near split edges."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(400):
        lines.append(json.dumps({"instruction": f"Explain item {i % 150} in simple words", "input": ""}))
        if i % 37 == 0:
            lines += ["{broken", "", '{"input": "no instruction"}']
    (root / "big.jsonl").write_text("\n".join(lines) + "\n")
    rows = ["instruction,input"] + [f'"Explain item {i % 90} in simple words",ctx {i % 3}' for i in range(300)]
    rows.insert(50, "bad,row,extra")
    (root / "big.csv").write_text("\n".join(rows) + "\n")
    pq.write_table(pa.table({"instruction": [f"Explain item {i % 120} in simple words" for i in range(600)],
                             "input": [""] * 600}), root / "big.parquet", row_group_size=40)
    return [str(root / n) for n in ("big.jsonl", "big.csv", "big.parquet")]


def test_one_split_or_many_gives_the_same_dedup_output(spark, tmp_path):
    from selectllm.dedup.stage import run_stage

    files = _split_corpus(tmp_path / "in")
    outputs, stats = [], []
    for i, size in enumerate((1 << 30, 2048)):
        ctx = stage_ctx(tmp_path / f"r{i}" / "run", "dedup", EXACT_ONLY, _paths(files),
                        f"spark.conf.spark.sql.files.maxPartitionBytes={size}")
        ctx.log = Console(file=io.StringIO(), width=200)
        counts = run_stage(ctx)
        # progress in the project's words, from the tasks' accumulators
        assert f"dedup: {counts['read']:,} rows read, 3/3 files done ({counts['splits']}/{counts['splits']} splits)" \
            in ctx.log.file.getvalue()
        out = Path(ctx.out)
        tables = {name: pq.read_table(out / name) for name in ("quarantine", "duplicates.parquet")}
        tables["kept"] = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
        outputs.append({k: sorted(map(tuple, (r.values() for r in t.to_pylist()))) for k, t in tables.items()})
        stats.append(counts)
    assert stats[0]["splits"] == 3 and stats[1]["splits"] > 20
    assert outputs[0] == outputs[1]
    assert {k: v for k, v in stats[0].items() if k != "splits"} == {k: v for k, v in stats[1].items() if k != "splits"}
    expected = _expected(files, 20_000)
    assert stats[1]["read"] == expected["read"] and stats[1]["kept"] == expected["kept"]
    # the quarantine names the physical line of the JSONL file, whatever the split
    physical = (tmp_path / "in" / "big.jsonl").read_text().split("\n")
    for raw, source, row, _reason in outputs[1]["quarantine"]:
        if source.endswith("big.jsonl"):
            assert physical[row] == raw


def test_low_information_rows_are_quarantined_with_their_rule(spark, tmp_path):
    from selectllm.dedup.stage import run_stage

    rows = [{"instruction": "Write a short note about tea.", "input": ""}, {"instruction": "test 123", "input": ""},
            {"instruction": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8=", "input": ""},
            {"instruction": "Define photosynthesis.", "input": "$$$ %%%"}]
    src = tmp_path / "junk.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = stage_ctx(tmp_path / "run", "dedup", _paths([str(src)]))
    counts = run_stage(ctx)
    out = Path(ctx.out)
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    got = sorted((r["source_row"], r["reason"], json.loads(r["raw"])["rule"]) for r in quarantine)
    assert got == [(1, "low_quality", "placeholder"), (2, "low_quality", "long_words")]
    assert json.loads(quarantine[0]["raw"])["instruction"] in ("test 123", rows[2]["instruction"])
    assert counts["kept"] == 2 and counts["quarantined_low_quality"] == 2  # the input is not judged
    off = stage_ctx(tmp_path / "off" / "run", "dedup", _paths([str(src)]), "dedup.quality.enabled=false")
    assert run_stage(off)["kept"] == 4
