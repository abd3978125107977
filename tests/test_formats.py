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
    {"instruction": "42"},
]
EXPECTED = [
    (0, None, "Give three tips for staying healthy.", "", None),
    (1, None, "Translate  to French", "Good   morning", None),  # the source text, never normalized
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
    assert (row, instr, reason) == (0, None, "unreadable") and "broken.parquet" in raw


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
        (1, None, "Translate  to French", "Good   morning", None),
        (2, None, "Multi\nline, with comma", "x", None),
    ]
    assert _reasons(got[3:]) == [(3, "malformed")]


def test_txt_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"first instruction\r\n\r\n  second  one \n")
    # the line as in the file, without its line ending (\n or \r\n)
    assert _read(p, preset="text") == [(0, None, "first instruction", "", None), (2, None, "  second  one ", "", None)]


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


def test_sharegpt_conversations(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(_jsonl_bytes([
        {"conversations": [{"from": "system", "value": "be nice"}, {"from": "human", "value": "Hi  there"},
                           {"from": "gpt", "value": "hello"}, {"from": "human", "value": "second"}]},
        {"conversations": [{"from": "human", "value": [{"type": "text", "text": "part one"},
                                                       {"type": "image_url", "image_url": {}}]}]},
        {"conversations": [{"from": "gpt", "value": "no human turn"}]},
        {"conversations": "not a list"},
        {"messages": [{"role": "user", "content": "the openai preset's key"}]},
        {"id": 7},
    ]))
    got = _read(p, preset="sharegpt")
    assert got[:2] == [(0, None, "Hi  there", "System: be nice", None), (1, None, "part one", "", None)]
    assert _reasons(got[2:]) == [(2, "no_user_turn"), (3, "malformed_turn"), (4, "missing_field"),
                                 (5, "missing_field")]
    assert _read(p, preset="openai")[4][:5] == (4, None, "the openai preset's key", "", None)


def test_sharegpt_parquet(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"conversations": [[{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a"}]]}), p)
    assert _read(p, preset="sharegpt") == [(0, None, "q1", "", None)]


# ----------------------------------------------------------------------------- wrong types
WRONG = [{"nested": "object"}, ["a", "list"], 42, 4.5, True, False]


@pytest.mark.parametrize("value", WRONG, ids=[type(v).__name__ for v in WRONG])
def test_a_text_field_of_a_wrong_type_is_wrong_type_never_stringified(tmp_path, value):
    recs = [{"instruction": value}, {"instruction": "ok", "input": value}, {"instruction": None},
            {"instruction": "fine", "input": None}]
    p = tmp_path / "w.jsonl"
    p.write_bytes(_jsonl_bytes(recs))
    arr = tmp_path / "w.json"
    arr.write_text(json.dumps(recs))
    for path in (p, arr):
        got = _read(path)
        assert _reasons(got) == [(0, "wrong_type"), (1, "wrong_type"), (2, "empty"), (3, None)]
        assert json.loads(got[0][1]) == recs[0]  # raw: the record, not the stringified value
    # the text preset and a chat preset's top-level system prompt too
    t = tmp_path / "t.jsonl"
    t.write_bytes(_jsonl_bytes([{"text": value}]))
    assert _reasons(_read(t, preset="text")) == [(0, "wrong_type")]
    c = tmp_path / "c.jsonl"
    c.write_bytes(_jsonl_bytes([{"system": value, "conversations": [{"from": "human", "value": "q"}]}]))
    if not isinstance(value, list):  # a list is a system prompt of content parts (Anthropic style)
        assert _reasons(_read(c, preset="sharegpt")) == [(0, "wrong_type")]


def test_parquet_non_string_columns_are_wrong_type(tmp_path):
    import datetime

    p = tmp_path / "types.parquet"
    pq.write_table(pa.table({
        "instruction": ["text", "more", "x"],
        "input": pa.array([1, None, 3], pa.int64()),
    }), p)
    assert _reasons(_read(p)) == [(0, "wrong_type"), (1, None), (2, "wrong_type")]
    q = tmp_path / "nested.parquet"
    pq.write_table(pa.table({
        "instruction": pa.array([{"a": "b"}, None]),
        "when": [datetime.datetime(2026, 1, 1), None],
    }), q)
    assert _reasons(_read(q)) == [(0, "wrong_type"), (1, "empty")]
    assert _reasons(_read(q, fields={"instruction": "when", "input": None})) == [(0, "wrong_type"), (1, "empty")]
    b = tmp_path / "binary.parquet"
    pq.write_table(pa.table({"instruction": pa.array([b"bytes ok", b"caf\xe9"], pa.binary())}), b)
    assert _reasons(_read(b)) == [(0, None), (1, "bad_encoding")]


def test_csv_is_always_text(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text('instruction,input\n42,true\n"{""a"": 1}",\n')
    assert [r[2:4] for r in _read(p)] == [("42", "true"), ('{"a": 1}', "")]


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


# ----------------------------------------------------------------------------- unreadable files
def _many_rows(n: int) -> list[dict]:
    return [{"instruction": f"task {i}: describe item {i * 7919 % 10007} in {i % 13} words"} for i in range(n)]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_compressed_file_keeps_the_rows_before_the_fault(tmp_path, suffix):
    rows = _many_rows(40_000)  # ~2.5 MB of text: several 1 MB reads before the cut
    data = _jsonl_bytes(rows)
    packed = gzip.compress(data) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data)
    p = tmp_path / ("cut.jsonl" + suffix)
    p.write_bytes(packed[: len(packed) * 2 // 3])
    got = _read(p)
    good, last = got[:-1], got[-1]
    assert good and len(good) < len(rows)
    # the rows before the fault, exactly as in the file, every one of them in order
    assert [(r[0], r[2], r[4]) for r in good] == [(i, rows[i]["instruction"], None) for i in range(len(good))]
    assert (last[0], last[2], last[4]) == (len(good), None, "unreadable")  # stopped at the next line
    assert str(p) in last[1]


def test_truncated_json_array_gz(tmp_path):
    rows = _many_rows(40_000)
    packed = gzip.compress(json.dumps(rows).encode())
    p = tmp_path / "cut.json.gz"
    p.write_bytes(packed[: len(packed) // 2])
    got = _read(p)
    assert got[-1][4] == "unreadable" and got[-1][0] == len(got) - 1 > 0
    assert [r[2] for r in got[:-1]] == [r["instruction"] for r in rows[: len(got) - 1]]


def test_corrupt_parquet_row_group_keeps_the_other_row_groups(tmp_path):
    p = tmp_path / "rg.parquet"
    rows = _many_rows(300)
    pq.write_table(pa.Table.from_pylist(rows), p, row_group_size=100, compression="none")
    meta = pq.read_metadata(p)
    col = meta.row_group(1).column(0)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    data = bytearray(p.read_bytes())
    data[start: start + 64] = b"\xff" * 64  # the page header of row group 1: not thrift any more
    p.write_bytes(bytes(data))
    got = _read(p)
    assert [r[0] for r in got if r[4] is None] == list(range(100)) + list(range(200, 300))
    [bad] = [r for r in got if r[4] is not None]
    assert (bad[0], bad[4]) == (100, "unreadable") and "row group 1" in bad[1]
    truncated = tmp_path / "short.parquet"
    truncated.write_bytes(p.read_bytes()[:-20])  # the footer cut off
    assert _reasons(_read(truncated)) == [(0, "unreadable")]


def _splits(path, split_bytes: int) -> list:
    from selectllm.io import InputFile
    from selectllm.text.splits import count_split, plan_files, resolve_splits

    f = InputFile(url=str(path), size=path.stat().st_size, version="")
    planned, to_count = plan_files([f], "auto", split_bytes)
    return resolve_splits(planned, {(s.file_index, s.part): count_split(s) for s in to_count})


def test_corrupt_parquet_read_in_splits_gives_the_same_rows(tmp_path):
    p = tmp_path / "rg.parquet"
    pq.write_table(pa.Table.from_pylist(_many_rows(300)), p, row_group_size=100, compression="none")
    col = pq.read_metadata(p).row_group(1).column(0)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    data = bytearray(p.read_bytes())
    data[start: start + 64] = b"\xff" * 64
    p.write_bytes(bytes(data))
    splits = _splits(p, p.stat().st_size // 4)
    assert len(splits) > 2
    assert [r for s in splits for r in iter_records(str(p), split=s)] == _read(p)
    footless = tmp_path / "footless.parquet"
    footless.write_bytes(bytes(data[:-20]))
    got = [r for s in _splits(footless, footless.stat().st_size // 4) for r in iter_records(str(footless), split=s)]
    assert _reasons(got) == [(0, "unreadable")]  # one row for the file, not one per split


def test_a_path_that_cannot_be_opened_is_one_unreadable_row(tmp_path):
    d = tmp_path / "a_folder.jsonl"  # a folder where a file was listed: IsADirectoryError on open
    d.mkdir()
    [(row, raw, instr, inp, reason)] = _read(d)
    assert (row, instr, reason) == (0, None, "unreadable") and "IsADirectoryError" in raw


class _FailingFile:
    """A file object whose read of byte ``at`` raises ``error``: simulates an I/O fault mid-file
    (a dropped network read, a bad disk sector).  Reads return at most 4 KB, as a network stream
    may, so a split gets some rows before the fault.  (Tests run as root: a real permission
    error cannot be made with chmod, so a failed open is simulated by raising at opening.)"""

    def __init__(self, f, at: int, error: Exception):
        self.f, self.at, self.error, self.pos = f, at, error, 0

    def read(self, n=-1):
        start = self.pos
        data = self.f.read(4096 if n is None or n < 0 else min(n, 4096))
        self.pos += len(data)
        if start <= self.at < self.pos:
            raise self.error
        return data

    def seek(self, *a):
        self.pos = self.f.seek(*a)
        return self.pos

    def tell(self):
        return self.f.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _failing_open(monkeypatch, at: int, error: Exception, opening: bool = False):
    real = formats._open

    class Opener:
        def __init__(self, url):
            self.url = url

        def __enter__(self):
            if opening:
                raise error
            return _FailingFile(real(self.url).__enter__(), at, error)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(formats, "_open", Opener)


def test_faults_in_any_split_keep_the_rows_of_the_other_splits(tmp_path, monkeypatch):
    p = tmp_path / "big.jsonl"
    rows = _many_rows(3000)
    p.write_bytes(_jsonl_bytes(rows))
    size = p.stat().st_size
    splits = _splits(p, size // 3 + 1)
    assert len(splits) == 3
    whole = [r for s in splits for r in iter_records(str(p), split=s)]
    assert [r[0] for r in whole] == list(range(3000))

    # an I/O error in the middle of the second split: its rows before the fault, the other splits whole
    _failing_open(monkeypatch, at=size // 2, error=OSError(5, "Input/output error"))
    got = [(s.part, r) for s in splits for r in iter_records(str(p), split=s)]
    bad = [(part, r) for part, r in got if r[4] is not None]
    assert [(part, r[4]) for part, r in bad] == [(1, "unreadable")] and "Input/output error" in bad[0][1][1]
    good = [r[0] for _, r in got if r[4] is None]
    stop = bad[0][1][0]
    assert splits[1].first_row < stop < splits[2].first_row
    assert good == list(range(stop)) + list(range(splits[2].first_row, 3000))  # the third split whole

    # a permission error at opening: one row for the file (its first split), not one per split
    _failing_open(monkeypatch, 0, PermissionError(13, "Permission denied"), opening=True)
    got = [r for s in splits for r in iter_records(str(p), split=s)]
    assert [(r[0], r[4]) for r in got] == [(0, "unreadable")] and "Permission denied" in got[0][1]


def test_other_errors_are_not_hidden_as_unreadable(tmp_path, monkeypatch):
    p = tmp_path / "a.jsonl"
    p.write_bytes(_jsonl_bytes(ROWS))

    def boom(*a, **k):
        raise RuntimeError("a bug, not a bad file")

    monkeypatch.setattr(formats, "check_text", boom)
    with pytest.raises(RuntimeError):
        _read(p)


def test_zst_of_several_frames_is_read_whole(tmp_path):
    """Concatenated zstd frames (``cat a.zst b.zst``, some multi-threaded writers) are one stream."""
    c = zstandard.ZstdCompressor()
    p = tmp_path / "two.jsonl.zst"
    p.write_bytes(c.compress(_jsonl_bytes(ROWS[:2])) + c.compress(_jsonl_bytes(ROWS[2:])))
    assert _read(p) == EXPECTED
# ----------------------------------------------------------------------------- the source text is kept
SOURCE_TEXTS = [
    "for i in range(10):\n    print(i)\n\n\n\treturn  i  ",  # indentation, tab, blank lines, trailing spaces
    "  leading spaces\r\nwindows line\u2028separator ",
    "Caf\u00e9 na\u00efve \u4f60\u597d\uff0c\u4e16\u754c \U0001f600 \uff21\uff22",  # accents, CJK, emoji, fullwidth
    "e\u0301 decomposed accent, NBSP\u00a0and ideographic\u3000space",  # not NFC, not NFKC: kept as is
]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv"])
def test_source_text_is_kept_exactly_in_every_format(tmp_path, fmt):
    rows = [{"instruction": t, "input": SOURCE_TEXTS[-1 - i]} for i, t in enumerate(SOURCE_TEXTS)]
    p = tmp_path / f"src.{fmt}"
    if fmt == "jsonl":
        p.write_bytes(_jsonl_bytes(rows))
    elif fmt == "json":
        p.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), p)
    else:
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["instruction", "input"])
            w.writerows([r["instruction"], r["input"]] for r in rows)
    got = _read(p)
    assert [(r[2], r[3], r[4]) for r in got] == [(r["instruction"], r["input"], None) for r in rows]


def test_empty_is_decided_on_the_normalized_text_and_too_long_on_the_kept_text(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_bytes(_jsonl_bytes([
        {"instruction": "\u3000\t \u00a0\n\u2028"},  # whitespace only once normalized: empty
        {"instruction": "ab" + " " * 20},  # 22 characters as kept (2 once normalized): too_long at 20
        {"instruction": "  ok  ", "input": "\n"},  # kept, spaces and all
    ]))
    got = _read(p, max_chars=20)
    assert _reasons(got) == [(0, "empty"), (1, "too_long"), (2, None)]
    assert got[2][2:4] == ("  ok  ", "\n")


def test_a_format_is_one_reader_and_one_entry(tmp_path, monkeypatch):
    """input.format's choices are READERS' names; a new entry is detected by its file name, read,
    and split as it declares."""
    from typing import get_args

    from selectllm.config import InputConfig
    from selectllm.text import formats
    from selectllm.text.splits import is_splittable

    assert set(get_args(InputConfig.model_fields["format"].annotation)) == {"auto", *formats.READERS}
    assert "txt" in formats.FORMATS

    def read_tsv(s):  # instruction<TAB>input per line
        for i, line in enumerate(s.lines.read().decode().splitlines()):
            instruction, _, inp = line.partition("\t")
            yield i + s.first, None, instruction, inp, None

    monkeypatch.setitem(formats.READERS, "tsv", formats.Reader(read_tsv, (".tsv",), "lines"))
    p = tmp_path / "a.tsv"
    p.write_text("Add two numbers\t2 and 3\nName a colour\t\n")
    assert formats.detect_format(str(p)) == "tsv" and is_splittable("tsv", compressed=False)
    assert [r[2:4] for r in formats.iter_records(str(p))] == [("Add two numbers", "2 and 3"), ("Name a colour", "")]
