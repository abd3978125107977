"""Chat transcripts (openai, sharegpt, lmsys presets) as instruction rows: roles, turns, context
layout, media parts, quarantine reasons, and the input.keep columns."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.config import load_config
from selectllm.errors import UserError
from selectllm.text.chat import ChatError, chat_rows
from selectllm.text.formats import iter_records, iter_rows

from helpers import stage_ctx


def _jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _good(rows):
    return [(r[0], r[2], r[3], r[5]["user_turn"]) for r in rows if r[4] is None]


# three layouts of the same conversation: system prompt, two user turns, one with an image
OPENAI = {"id": "c1", "model": "gpt-4o", "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "And its colour?"},
    {"role": "assistant", "content": "Black."},
]}
SHAREGPT = {"id": "c1", "system": "You are terse.", "conversations": [
    {"from": "human", "value": "What is in this picture?"},
    {"from": "gpt", "value": "A cat."},
    {"from": "human", "value": "And its colour?"},
    {"from": "gpt", "value": "Black."},
]}
LMSYS = {"conversation_id": "c1", "model": "vicuna-13b", "turn": 2, "language": "English", "conversation": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is in this picture?"},
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "And its colour?"},
    {"role": "assistant", "content": "Black."},
]}
FIRST = ("What is in this picture?", "System: You are terse.")
SECOND = ("And its colour?",
          "System: You are terse.\n\nUser: What is in this picture?\n\nAssistant: A cat.")


@pytest.mark.parametrize("preset,record", [("openai", OPENAI), ("sharegpt", SHAREGPT), ("lmsys", LMSYS)])
def test_each_layout_gives_the_right_rows_for_each_turn_mode(tmp_path, preset, record):
    p = _jsonl(tmp_path / "c.jsonl", [record])
    first = _good(iter_rows(p, preset=preset, turn="first"))
    last = _good(iter_rows(p, preset=preset, turn="last"))
    each = _good(iter_rows(p, preset=preset, turn="each"))
    assert first == [(0, *FIRST, 0)]
    assert last == [(0, *SECOND, 1)]
    assert each == [(0, *FIRST, 0), (0, *SECOND, 1)]  # one record, two rows, same source_row


def test_each_turn_rows_of_one_record_have_distinct_ids():
    from selectllm.text.normalize import content_id

    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
                        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"},
                        {"role": "user", "content": "hi"}]}
    rows = chat_rows(rec, "openai", "each")
    assert [r.user_turn for r in rows] == [0, 1, 2]
    ids = {content_id(r.instruction, r.context) for r in rows}
    assert len(ids) == 3  # same question, different contexts: different rows


def test_roles_are_normalized_and_tool_turns_stay_context():
    rec = {"conversations": [
        {"from": "developer", "value": "Use tools."},
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": '{"temp": 3}'},
        {"from": "gpt", "value": "3 degrees."},
        {"from": "Human", "value": "Thanks!"},
    ]}
    (row,) = chat_rows(rec, "sharegpt", "last")
    assert row.instruction == "Thanks!" and row.user_turn == 1
    assert row.context == ('System: Use tools.\n\nUser: Weather in Oslo?\n\n'
                           'Function call: {"name": "weather", "arguments": {"city": "Oslo"}}\n\n'
                           'Observation: {"temp": 3}\n\nAssistant: 3 degrees.')


def test_openai_tool_calls_and_tool_messages():
    rec = {"messages": [
        {"role": "user", "content": "Add 2 and 3"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "add", "arguments": '{"a":2,"b":3}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "5"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Now times 4"},
    ]}
    (row,) = chat_rows(rec, "openai", "last")
    assert row.context == ('User: Add 2 and 3\n\nAssistant: [tool call] add({"a":2,"b":3})\n\n'
                           'Tool: 5\n\nAssistant: 5')
    # the tool turn is never the instruction: the first user turn is turn 0
    assert chat_rows(rec, "openai", "first")[0].instruction == "Add 2 and 3"


def test_media_parts_are_counted_never_embedded(tmp_path):
    rec = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                                     {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
                                     {"type": "text", "text": "Describe both."}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "Shorter."}]},
    ]}
    rows = list(iter_rows(_jsonl(tmp_path / "m.jsonl", [rec]), preset="openai", turn="each"))
    assert [(r[2], r[5]["media_parts"]) for r in rows] == [("Describe both.", 2), ("Shorter.", 2)]
    assert all("cat.png" not in r[2] + r[3] and "UklGR" not in r[2] + r[3] for r in rows)
    # an image-only user turn has no text: that row is empty, the others are kept
    rec2 = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
                         {"role": "assistant", "content": "a dog"}, {"role": "user", "content": "Breed?"}]}
    rows = list(iter_rows(_jsonl(tmp_path / "m2.jsonl", [rec2]), preset="openai", turn="each"))
    assert [(r[4], r[5]["user_turn"]) for r in rows] == [("empty", 0), (None, 1)]


BAD = [
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "no_user_turn"),
    ({"messages": [{"role": "system", "content": "s"}]}, "no_user_turn"),
    ({"messages": []}, "no_user_turn"),
    ({"messages": "user: hi"}, "malformed_turn"),  # not a list
    ({"messages": {"role": "user", "content": "hi"}}, "malformed_turn"),
    ({"messages": ["hi"]}, "malformed_turn"),  # a turn not an object
    ({"messages": [{"content": "hi"}]}, "malformed_turn"),  # no role
    ({"messages": [{"role": None, "content": "hi"}]}, "malformed_turn"),
    ({"messages": [{"role": "user"}]}, "malformed_turn"),  # no content
    ({"messages": [{"role": "narrator", "content": "hi"}]}, "malformed_turn"),  # unknown role
    ({"messages": [{"role": 3, "content": "hi"}]}, "malformed_turn"),
    ({"messages": [{"role": "user", "content": 42}]}, "malformed_turn"),  # content of a wrong type
    ({"messages": [{"role": "user", "content": {"text": "hi"}}]}, "malformed_turn"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "malformed_turn"),
    ({"messages": [{"role": "user", "content": [7]}]}, "malformed_turn"),
    ({"messages": [{"role": "user", "content": "hi"}], "system": {"a": 1}}, "wrong_type"),
    ({"messages": None}, "missing_field"),
    ({"conversation": [{"role": "user", "content": "hi"}]}, "missing_field"),  # another preset's key
    ({"messages": [{"role": "user", "content": "  "}]}, "empty"),
]


@pytest.mark.parametrize("record,reason", BAD, ids=[f"{i}-{r}" for i, (_, r) in enumerate(BAD)])
def test_every_malformed_case_is_quarantined_with_its_reason(tmp_path, record, reason):
    p = _jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "fine"}]}, record])
    for turn in ("first", "last", "each"):
        got = list(iter_records(p, preset="openai", turn=turn))
        assert [(r[0], r[4]) for r in got] == [(0, None), (1, reason)]
        assert got[1][1] == json.dumps(record)  # raw: the record as it was
        if reason != "empty":
            with pytest.raises(ChatError, match=reason):
                chat_rows(record, "openai", turn)


def test_chat_in_parquet_and_json_array(tmp_path):
    pq.write_table(pa.Table.from_pylist([LMSYS, {**LMSYS, "conversation": [{"role": "gpt", "content": "x"}]}]),
                   tmp_path / "l.parquet")
    got = list(iter_rows(str(tmp_path / "l.parquet"), preset="lmsys", turn="each", keep=["model", "turn"]))
    assert _good(got) == [(0, *FIRST, 0), (0, *SECOND, 1)]
    assert got[0][5]["model"] == "vicuna-13b" and got[0][5]["turn"] == "2"
    assert (got[2][0], got[2][4]) == (1, "no_user_turn")
    (tmp_path / "s.json").write_text(json.dumps([SHAREGPT, SHAREGPT]))
    assert _good(iter_rows(str(tmp_path / "s.json"), preset="sharegpt")) == [(0, *FIRST, 0), (1, *FIRST, 0)]


def test_keep_reads_any_field_of_the_record(tmp_path):
    recs = [{**LMSYS, "timestamp": "2024-01-01T00:00:00", "moderation": {"flagged": False}, "score": 0.5},
            {"conversation": LMSYS["conversation"]}]
    got = list(iter_rows(_jsonl(tmp_path / "k.jsonl", recs), preset="lmsys",
                         keep=["conversation_id", "timestamp", "moderation", "score"]))
    assert {k: got[0][5][k] for k in ("conversation_id", "timestamp", "moderation", "score")} == {
        "conversation_id": "c1", "timestamp": "2024-01-01T00:00:00", "moderation": '{"flagged": false}',
        "score": "0.5"}
    assert got[1][5]["conversation_id"] is None and got[1][5]["moderation"] is None  # missing: null
    # column presets too
    p = _jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "lang": "de"}])
    assert list(iter_rows(p, keep=["lang"]))[0][5] == {"lang": "de"}


def test_turn_and_keep_config_errors_name_the_key():
    cfg = load_config(None, ["input.preset=lmsys", "input.turn=each", "input.keep=[model, language]"])
    assert (cfg.input.turn, cfg.input.keep) == ("each", ["model", "language"])
    assert load_config(None, ["input.keep=model"]).input.keep == ["model"]
    for override, key in (("input.turn=middle", "input.turn"), ("input.keep=[id]", "input.keep"),
                          ("input.keep=[a, A]", "input.keep"), ("input.keep=[user_turn]", "input.keep"),
                          ("input.preset=chatml", "input.preset"), ("input.keep=[[a]]", "input.keep")):
        with pytest.raises(UserError) as e:
            load_config(None, [override])
        msg = str(e.value)
        assert "\n" not in msg and key in msg, msg


# ----------------------------------------------------------------------------- through the dedup stage
def _conv(cid: str, turns: list[str], model: str = "vicuna-13b") -> dict:
    conv = []
    for i, t in enumerate(turns):
        conv += [{"role": "user", "content": t}, {"role": "assistant", "content": f"answer {i} to {cid}"}]
    return {"conversation_id": cid, "model": model, "language": "English", "conversation": conv}


LONG = ("Explain in detail how a refrigerator moves heat from the cold inside to the warm kitchen, "
        "naming the compressor, the condenser coils, the expansion valve and the evaporator, and say "
        "why the refrigerant must change between liquid and gas at each stage of the cycle")


def _chat_corpus(root) -> list[str]:
    import gzip

    root.mkdir(parents=True, exist_ok=True)
    recs = [
        _conv("a", ["Name three rivers in Africa.", "Which is the longest?"]),
        _conv("b", ["Name three rivers in Africa."]),                  # = a's turn 0: exact duplicate
        _conv("c", [LONG]),
        _conv("e", [LONG.replace("cycle", "loop")]),                    # near duplicate of c
        {"conversation_id": "f", "conversation": [{"role": "assistant", "content": "hi"}]},  # no_user_turn
        {"conversation_id": "g", "conversation": [{"role": "user", "content": {"x": 1}}]},  # malformed_turn
        {"conversation_id": "h", "conversation": [{"role": "user", "content": "Tell me a joke"}],
         "model": {"name": "m", "v": 2}},                                # a non-scalar kept value
    ]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    # ~2.5 MB decompressed (a padding field), so the reader gets whole 1 MB reads before the cut
    many = [{**_conv(f"z{i}", [f"Question {i}: what is {i} times {i * 7 % 11}?"]), "pad": "lorem " * 500}
            for i in range(800)]
    packed = gzip.compress("".join(json.dumps(r) + "\n" for r in many).encode())
    (root / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])  # truncated
    table = pa.Table.from_pylist([_conv(f"p{i}", [f"Parquet question number {i}?"]) for i in range(300)])
    table = table.append_column("timestamp", pa.array([1_700_000_000_000_000 + i for i in range(300)],
                                                      pa.timestamp("us")))
    pq.write_table(table, root / "rg.parquet", row_group_size=100, compression="none")
    meta = pq.read_metadata(root / "rg.parquet")
    col = meta.row_group(1).column(0)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    data = bytearray((root / "rg.parquet").read_bytes())
    data[start: start + 64] = b"\xff" * 64  # row group 1 cannot be read
    (root / "rg.parquet").write_bytes(bytes(data))
    return [str(root / n) for n in ("chat.jsonl", "cut.jsonl.gz", "rg.parquet")]


def test_dedup_stage_chat_each_turn_keep_columns_and_unreadable_files(spark, tmp_path):
    from collections import Counter

    from selectllm import pipeline, schemas
    from selectllm.dedup.stage import STAGE
    from selectllm.rundir import RunDir
    from selectllm.select.stage import write_outputs
    from selectllm.text.normalize import content_id

    files = _chat_corpus(tmp_path / "in")
    keep = ["conversation_id", "model", "timestamp", "language"]
    cfg = load_config(None, ["input.paths=[" + ", ".join(files) + "]", "input.preset=lmsys", "input.turn=each",
                             f"input.keep=[{', '.join(keep)}]", "dedup.near.enabled=true"])
    run = RunDir(str(tmp_path / "run"))
    pipeline.run_stage(cfg, run, STAGE)
    out = tmp_path / "run" / "dedup"
    stats = json.loads((out / "stats.json").read_text())

    # the oracle: the same files read in Python
    reasons, ids, rows_read, good_rows = Counter(), Counter(), Counter(), 0
    for f in files:
        for row in iter_rows(f, preset="lmsys", turn="each", keep=keep):  # the same columns read
            if row[4] != "unreadable":
                rows_read[f] += 1
            if row[4]:
                reasons[row[4]] += 1
            else:
                ids[content_id(row[2], row[3])] += 1
                good_rows += 1
    assert stats["read"] == sum(reasons.values()) + good_rows
    assert stats["read"] == stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"] + \
        stats["quarantined_total"]
    assert {r: n for r, n in stats["quarantined"].items() if n} == dict(reasons)
    assert reasons["unreadable"] == 2 and reasons["no_user_turn"] == 1 and reasons["malformed_turn"] == 1
    assert stats["exact_duplicates"] == good_rows - len(ids) >= 1
    assert stats["near_duplicates"] >= 1
    # the unreadable files, with the rows read before the fault; the other file read whole
    bad = {u["source"]: u for u in stats["unreadable_files"]}
    assert sorted(bad) == sorted(files[1:])
    for f in files[1:]:
        assert bad[f]["rows_read"] == rows_read[f] and bad[f]["faults"] == 1 and bad[f]["error"]
    assert 0 < rows_read[files[1]] < 800 and rows_read[files[2]] == 200

    kept = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]).to_pylist()
    names = list(kept[0])
    assert names == schemas.DEDUP.names + ["user_turn", "media_parts", "conversation_id", "model",
                                           "timestamp", "language", "findings"]
    a = sorted((r["user_turn"], r["instruction"], r["input"]) for r in kept if r["conversation_id"] == "a")
    assert a == [(0, "Name three rivers in Africa.", ""),
                 (1, "Which is the longest?", "User: Name three rivers in Africa.\n\nAssistant: answer 0 to a")]
    assert {r["source_row"] for r in kept if r["conversation_id"] == "a"} == {0}
    assert not [r for r in kept if r["conversation_id"] in ("b", "e")]  # the exact and the near duplicate
    h = next(r for r in kept if r["conversation_id"] == "h")
    assert json.loads(h["model"]) == {"name": "m", "v": 2} and h["timestamp"] is None
    p0 = next(r for r in kept if r["conversation_id"] == "p0")
    assert p0["timestamp"] == "2023-11-14T22:13:20" and p0["language"] == "English"

    dups = pq.read_table(out / "duplicates.parquet").to_pylist()
    assert {(d["kind"], d["source_row"], d["user_turn"]) for d in dups if d["source"] == files[0]} == {
        ("exact", 1, 0), ("near", 3, 0)}
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    assert {(q["source"], q["source_row"], q["reason"]) for q in quarantine if q["reason"] == "unreadable"} == {
        (files[1], rows_read[files[1]], "unreadable"), (files[2], 100, "unreadable")}

    # the keep columns reach selected.jsonl
    ctx = stage_ctx(run, "select", cfg=cfg)
    picked = [r["id"] for r in kept if r["conversation_id"] in ("a", "h")]
    write_outputs(ctx, [(i, 0) for i in picked], [])
    selected = [json.loads(line) for line in open(ctx.out_path("selected.jsonl"))]
    assert len(selected) == 3
    for s in selected:
        assert s["conversation_id"] in ("a", "h") and s["language"] in ("English", None)
        assert set(s) >= {"id", "instruction", "input", "user_turn", "conversation_id", "model", "timestamp"}
    assert sorted(s["user_turn"] for s in selected if s["conversation_id"] == "a") == [0, 1]
