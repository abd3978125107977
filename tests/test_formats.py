"""Reading raw files record by record: formats, compression, presets, quarantine reasons."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from selectllm.config import InputFields
from selectllm.text import formats
from selectllm.text.formats import RAW_MAX_CHARS, UnknownFormat, detect_format, iter_records

ROWS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "..."},
    {"instruction": "Translate  to French", "input": "Good   morning", "output": "Bonjour"},
    {"instruction": "Sum these", "input": None},
    {"instruction": 42},
]
EXPECTED = [
    (0, None, "Give three tips for staying healthy.", "", None),
    (1, None, "Translate to French", "Good morning", None),
    (2, None, "Sum these", "", None),
    (3, None, "42", "", None),
]


def _jsonl_bytes(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _read(path, **kw):
    return list(iter_records(str(path), **kw))


def _reasons(records):
    return [(r[0], r[4]) for r in records]


# ----------------------------------------------------------------------------- formats
def test_jsonl(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(_jsonl_bytes(ROWS))
    assert _read(p) == EXPECTED


def test_jsonl_blank_lines_crlf_and_bom(tmp_path):
    p = tmp_path / "a.ndjson"
    p.write_bytes(b'\xef\xbb\xbf{"instruction": "one"}\r\n\r\n   \n{"instruction": "two"}')  # no final \n
    # blank lines are not records, but line indices keep counting them
    assert _read(p) == [(0, None, "one", "", None), (3, None, "two", "", None)]


def test_json_array_and_jsonl_in_json(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text("  \n" + json.dumps(ROWS, indent=2))
    assert _read(arr) == EXPECTED
    lines = tmp_path / "lines.json"
    lines.write_bytes(_jsonl_bytes(ROWS))
    assert _read(lines) == EXPECTED
    empty = tmp_path / "empty.json"
    empty.write_text("[ ]")
    assert _read(empty) == []


def test_json_array_streams_over_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "CHUNK", 7)  # force elements to span many reads
    p = tmp_path / "arr.json"
    p.write_text(json.dumps(ROWS * 3))
    assert [r[2] for r in _read(p)] == [e[2] for e in EXPECTED] * 3
    assert [r[0] for r in _read(p)] == list(range(12))


def test_json_array_bad_elements(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[{"instruction": "ok"}, 5, {"instruction": "x"} {"a": 1}, {"instruction": "lost"}]')
    got = _reasons(_read(p))
    # a missing comma cannot be resynchronized: the rest is one malformed record
    assert got == [(0, None), (1, "malformed"), (2, None), (3, "malformed")]
    trunc = tmp_path / "trunc.json"
    trunc.write_text('[{"instruction": "ok"}, {"instruction": "cut')
    assert _reasons(_read(trunc)) == [(0, None), (1, "malformed")]


def test_parquet(tmp_path):
    p = tmp_path / "a.parquet"
    table = pa.table({
        "instruction": [r["instruction"] if isinstance(r["instruction"], str) else str(r["instruction"])
                        for r in ROWS],
        "input": [r.get("input") for r in ROWS],
        "output": ["o"] * 4,
    })
    pq.write_table(table, p, row_group_size=2)
    assert _read(p) == EXPECTED


def test_parquet_not_parquet(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"this is not parquet at all")
    [(row, raw, instr, inp, reason)] = _read(p)
    assert (row, instr, reason) == (-1, None, "malformed") and "parquet" in raw


def test_csv(tmp_path):
    p = tmp_path / "a.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerow(["Give three tips for staying healthy.", "", "..."])
        w.writerow(["Translate  to French", "Good   morning", "Bonjour"])
        w.writerow([])  # an empty line is not a record
        w.writerow(["Multi\nline, with comma", "x", "y"])
        w.writerow(["only one field"])
    got = _read(p)
    assert got[:3] == [
        (0, None, "Give three tips for staying healthy.", "", None),
        (1, None, "Translate to French", "Good morning", None),
        (2, None, "Multi\nline, with comma", "x", None),
    ]
    assert _reasons(got[3:]) == [(3, "malformed")]


def test_txt_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first instruction\n\n  second  one \n")
    assert _read(p, preset="text") == [(0, None, "first instruction", "", None), (2, None, "second one", "", None)]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
@pytest.mark.parametrize("name", ["a.jsonl", "a.json", "a.csv"])
def test_compressed(tmp_path, suffix, name):
    if name.endswith(".csv"):
        data = b"instruction,input\nhello there,\nsecond,in\n"
        expected = [(0, None, "hello there", "", None), (1, None, "second", "in", None)]
    else:
        data = _jsonl_bytes(ROWS) if name.endswith("jsonl") else json.dumps(ROWS).encode()
        expected = EXPECTED
    p = tmp_path / (name + suffix)
    p.write_bytes(gzip.compress(data) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data))
    assert _read(p) == expected


def test_compressed_parquet(tmp_path):
    raw = tmp_path / "x.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"]}), raw)
    p = tmp_path / "x.parquet.gz"
    p.write_bytes(gzip.compress(raw.read_bytes()))
    assert [r[2] for r in _read(p)] == ["a", "b"]


def test_detect_format():
    assert detect_format("s3://b/x/data.JSONL.gz") == "jsonl"
    assert detect_format("/a/b.ndjson.zst") == "jsonl"
    assert detect_format("/a/b.json") == "json"
    assert detect_format("/a/b.parquet") == "parquet"
    assert detect_format("/a/b.csv.zstd") == "csv"
    assert detect_format("/a/b.txt") == "txt"
    assert detect_format("/a/b.dat", "jsonl") == "jsonl"
    with pytest.raises(UnknownFormat):
        detect_format("/a/b.dat")


def test_explicit_format_overrides_suffix(tmp_path):
    p = tmp_path / "data.log"
    p.write_bytes(_jsonl_bytes(ROWS[:1]))
    assert _read(p, fmt="jsonl") == EXPECTED[:1]


# ----------------------------------------------------------------------------- presets
def test_dolly(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(_jsonl_bytes([{"instruction": "Summarize", "context": "Long text", "response": "r",
                                 "category": "summarization"}]))
    assert _read(p, preset="dolly") == [(0, None, "Summarize", "Long text", None)]


def test_sharegpt_conversations_and_messages(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(_jsonl_bytes([
        {"conversations": [{"from": "system", "value": "be nice"}, {"from": "human", "value": "Hi  there"},
                           {"from": "gpt", "value": "hello"}, {"from": "human", "value": "second"}]},
        {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 2+2?"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "part one"},
                                                   {"type": "image_url", "image_url": {}}]}]},
        {"conversations": [{"from": "gpt", "value": "no human turn"}]},
        {"conversations": "not a list"},
        {"id": 7},
    ]))
    got = _read(p, preset="sharegpt")
    assert got[:3] == [(0, None, "Hi there", "", None), (1, None, "What is 2+2?", "", None),
                       (2, None, "part one", "", None)]
    assert _reasons(got[3:]) == [(3, "missing_field"), (4, "malformed"), (5, "missing_field")]


def test_sharegpt_parquet(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"conversations": [[{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a"}]]}), p)
    assert _read(p, preset="sharegpt") == [(0, None, "q1", "", None)]


def test_text_preset(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(_jsonl_bytes([{"text": "Write a poem", "input": "ignored"}, {"body": "x"}]))
    got = _read(p, preset="text")
    assert got[0] == (0, None, "Write a poem", "", None)
    assert got[1][4] == "missing_field"


def test_custom_fields_and_override(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(_jsonl_bytes([{"prompt": "Do it", "ctx": "now"}]))
    assert _read(p, preset="custom", fields={"instruction": "prompt", "input": "ctx"}) == [
        (0, None, "Do it", "now", None)]
    # input.fields overrides a preset's names; input: null means no input column
    assert _read(p, preset="alpaca", fields=InputFields(instruction="prompt", input=None)) == [
        (0, None, "Do it", "", None)]
    assert _read(p, preset="custom")[0][4] == "missing_field"  # default names: instruction/input


# ----------------------------------------------------------------------------- bad records
def test_every_reason_jsonl(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = [
        b'{"instruction": "good one"}',
        b"{not json",                                   # malformed
        b'["an", "array"]',                             # malformed: not an object
        b'{"instruction": "   \\n\\t "}',               # empty after cleaning
        b'{"instruction": null}',                       # empty
        b'{"instruction": "' + b"x" * 60 + b'"}',       # too_long (max_chars=50)
        b'{"instruction": "abc", "input": "' + b"y" * 48 + b'"}',  # too_long: instruction + input
        b'{"instruction": "caf\xe9"}',                  # bad_encoding (latin-1 byte)
        b'{"instruction": "lone \\ud800 surrogate"}',   # bad_encoding (not encodable text)
        b'{"input": "no instruction"}',                 # missing_field
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    got = _read(p, max_chars=50)
    assert _reasons(got) == [(0, None), (1, "malformed"), (2, "malformed"), (3, "empty"), (4, "empty"),
                             (5, "too_long"), (6, "too_long"), (7, "bad_encoding"), (8, "bad_encoding"),
                             (9, "missing_field")]
    for row, raw, instr, inp, reason in got[1:]:
        assert instr is None and inp is None and isinstance(raw, str) and raw
    assert got[1][1] == "{not json"
    assert "\ufffd" in got[7][1]  # decoded with errors="replace"
    for raw in (r[1] for r in got):
        if raw is not None:
            raw.encode("utf-8")  # quarantine text is always valid UTF-8


def test_overlong_line_is_not_parsed_and_raw_is_truncated(tmp_path):
    limit = formats.raw_line_limit(100)
    p = tmp_path / "big.jsonl"
    with open(p, "wb") as f:
        f.write(b'{"instruction": "before"}\n')
        f.write(b'{"instruction": "' + b"z" * (limit + 10) + b'"}\n')  # > limit bytes: never parsed
        f.write(b'{"instruction": "after"}\n')
    got = _read(p, max_chars=100)
    assert _reasons(got) == [(0, None), (1, "too_long"), (2, None)]
    assert len(got[1][1]) == RAW_MAX_CHARS and got[1][1].startswith('{"instruction": "zzz')
    assert got[2][2] == "after"


def test_iter_lines_never_holds_an_overlong_line():
    import io

    data = b"a\n" + b"x" * 50 + b"\nb\n" + b"y" * 30 + b"\nc"
    for chunk in (1, 3, 7, 1 << 20):
        formats.CHUNK, old = chunk, formats.CHUNK
        try:
            got = list(formats._iter_lines(io.BytesIO(data), limit=20))
        finally:
            formats.CHUNK = old
        assert [over for _, over in got] == [False, True, False, True, False]
        assert [b for b, over in got if not over] == [b"a", b"b", b"c"]
        # an overlong line comes back as a prefix (at least `limit` bytes, never the whole line
        # once it is bigger than RAW_MAX_CHARS * 4)
        assert got[1][0] == b"x" * len(got[1][0]) and 20 < len(got[1][0]) <= 50
        assert got[3][0] == b"y" * len(got[3][0]) and 20 < len(got[3][0]) <= 30


def test_bad_encoding_in_csv_and_json_array(tmp_path):
    c = tmp_path / "bad.csv"
    c.write_bytes(b"instruction,input\ngood,\ncaf\xe9,\n")
    assert _reasons(_read(c)) == [(0, None), (1, "bad_encoding")]
    j = tmp_path / "bad.json"
    j.write_bytes(b'[{"instruction": "good"}, {"instruction": "caf\xe9"}, {"instruction": "fine"}]')
    assert _reasons(_read(j)) == [(0, None), (1, "bad_encoding"), (2, None)]


def test_parquet_reasons(tmp_path):
    p = tmp_path / "r.parquet"
    pq.write_table(pa.table({"instruction": ["ok", "", None, "q" * 30], "input": ["", "", "", ""]}), p)
    assert _reasons(_read(p, max_chars=20)) == [(0, None), (1, "empty"), (2, "empty"), (3, "too_long")]
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"]}), m)
    got = _read(m)
    assert _reasons(got) == [(0, "missing_field"), (1, "missing_field")]
    assert json.loads(got[0][1]) == {"prompt": "a"}  # raw shows the row when the column is missing
