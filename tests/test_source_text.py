"""What annotators and the LLM receive is the source text, exactly: a whole `selectllm run` on
JSONL and Parquet records with code, tabs, blank lines, trailing spaces and non-ASCII text gives
them back byte for byte in ``selected.jsonl`` and in the prompts; normalization only makes the
ids and the embedded text."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.text.normalize import clean_text, content_id

from helpers import cli, config


JSONL_RECORDS = [
    {"instruction": "Fix the bug in this function:\n\ndef add(a, b):\n    if a is None:\n        return b\n"
                    "    return a -  b\n", "input": "    print(add(1,\t2))\n\n\n\n# expected: 3  "},
    {"instruction": "Convert the table below to CSV.\t(keep the header)", "input": "name\tage\tcity\nAnn\t31\tOslo\n"
                    "Bo\t27\tLima\t\t"},
    {"instruction": "Summarize the following letter for a busy manager.\n\n\n\n",
     "input": "Dear team,\n\n\n\nThe launch of the billing service moved to Friday.   \n\n\nBest,\nKim   "},
    {"instruction": "   Why is the sky blue during the day but red at sunset?   ", "input": ""},
    {"instruction": "Traduisez en anglais : « Le café est très chaud, ça brûle ! »", "input": "Réponse naïve — merci."},
    {"instruction": "请把下面的句子翻译成英文。", "input": "今日は天気がいいですね。\n明天会下雨吗？"},
    {"instruction": "Write a tweet about pizza night 🍕 with three emoji 🎉🔥", "input": ""},
    {"instruction": "Windows line endings\r\nshould survive\r\nas they are.", "input": "\r\n"},
]
PARQUET_RECORDS = [
    {"instruction": "Explain what this SQL query returns:", "input": "SELECT city,\n       count(*)\n"
                    "  FROM orders\n\tGROUP BY city;\n\n\n"},
    {"instruction": "Cafe\u0301 is written with a combining accent here: is it the same word as café?",
     "input": "non\u00a0breaking\u00a0spaces\u3000and an ideographic space"},
    {"instruction": "Ｆｕｌｌｗｉｄｔｈ letters and ① circled digits: normalize them in Python.", "input": ""},
    {"instruction": "Plan a three-day trip to Kyoto.  \n  Include temples, food and a rainy-day option.  ",
     "input": "  日程：3日間  \n  予算：5万円  "},
    {"instruction": "Rate this review from 1 to 5 stars 😀😐😞", "input": "Great phone.\n\n\n\nTerrible battery.\t\t"},
]


def _write_inputs(tmp_path):
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in JSONL_RECORDS))
    parquet = tmp_path / "records.parquet"
    pq.write_table(pa.Table.from_pylist(PARQUET_RECORDS), parquet)
    return {(str(jsonl), i): r for i, r in enumerate(JSONL_RECORDS)} | \
        {(str(parquet), i): r for i, r in enumerate(PARQUET_RECORDS)}


@pytest.mark.slow
def test_selected_jsonl_and_prompts_carry_the_source_text_byte_for_byte(tmp_path, spark, ray_local, monkeypatch):
    source = _write_inputs(tmp_path)
    n = len(source)
    cfg = config(tmp_path, tmp_path / "records.jsonl", budget=n)
    spec = json.loads(cfg.read_text())
    spec["input"]["paths"] = sorted({s for s, _ in source})
    cfg.write_text(json.dumps(spec))
    run = tmp_path / "run"
    cli("run", str(cfg))

    # every row is selected (budget = pool), with its text as in the source, and where it came from
    lines = (run / "selected.jsonl").read_bytes().decode("utf-8").splitlines()
    selected = [json.loads(x) for x in lines]
    assert len(selected) == n
    for r in selected:
        src = source[(r["source"], r["source_row"])]
        assert r["instruction"].encode("utf-8") == src["instruction"].encode("utf-8")
        assert r["input"].encode("utf-8") == src["input"].encode("utf-8")
        assert r["status"] == "no_llm"  # every cluster within its quota: no LLM call was needed
    assert {(r["source"], r["source_row"]) for r in selected} == set(source)

    # dedup keeps the source text; the id and the embedded text come from the normalized form
    kept = [r for part in sorted((run / "dedup").glob("part-*.parquet")) for r in pq.read_table(part).to_pylist()]
    assert len(kept) == n
    for r in kept:
        src = source[(r["source"], r["source_row"])]
        assert (r["instruction"], r["input"]) == (src["instruction"], src["input"])
        assert r["id"] == content_id(clean_text(src["instruction"]), clean_text(src["input"]))
        assert clean_text(src["instruction"]) in r["text"] and "\t" not in r["text"] and "\r" not in r["text"]

    # the LLM gets the source text too: a smaller budget makes the select stage ask
    import selectllm.select.decide as decide

    sent = []
    real_send = decide.send

    def recording_send(ctx, requests, **kw):
        sent.extend(requests)
        return real_send(ctx, requests, **kw)

    monkeypatch.setattr(decide, "send", recording_send)
    cli("run", str(cfg), "--set", "select.budget=3", "--set", "cluster.k=3")
    assert sent, "no LLM request was made"
    decisions = {d["group_id"]: d for d in pq.read_table(run / "select" / "decisions.parquet").to_pylist()}
    by_id = {r["id"]: source[(r["source"], r["source_row"])] for r in kept}
    shown = 0
    for req in sent:
        prompt = req.messages[-1]["content"]
        for cid in decisions[req.group_id]["candidate_ids"]:
            src = by_id[cid]
            assert f"### Instruction:\n{src['instruction']}" in prompt
            if src["input"]:
                assert f"### Input:\n{src['input']}" in prompt
            shown += 1
    assert shown >= 6
    statuses = [json.loads(x)["status"] for x in (run / "selected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(statuses) == 3 and set(statuses) <= {"llm", "fallback"}
