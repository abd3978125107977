"""Privacy inside the dedup stage (Spark): no row table, quarantine record, duplicate record or
stats text of the run directory holds a planted value, for JSONL with input.keep, chat records
(system prompt, earlier turns, tool-call arguments) and a Delta table; ``drop`` quarantines rows
with a secret; ``off`` masks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.config import load_config

from helpers import PLANTED, leaks, planted_values

pytestmark = pytest.mark.spark


def _write_inputs(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    email, phone, card, iban, ip, url = (PLANTED[k][0] for k in ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP", "URL"))
    secrets = PLANTED["SECRET"]
    alpaca = [
        {"instruction": f"Write a reminder to {email} about the invoice", "input": f"Call {phone} first.",
         "owner": f"billing contact {PLANTED['EMAIL'][1]}"},
        {"instruction": f"Is {card} a valid card number?", "input": f"Pay into {iban} from {ip}.", "owner": "x"},
        {"instruction": "Why does this config fail?", "input": "\n".join(secrets), "owner": url},
        {"instruction": "What is the capital of France?", "input": "", "owner": "nobody"},
    ]
    lines = [json.dumps(r) for r in alpaca]
    lines.append('{"instruction": "half a record from ' + PLANTED["PHONE"][1] + " and " + secrets[1])  # malformed
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    chat = {"messages": [
        {"role": "system", "content": f"You help {PLANTED['EMAIL'][1]}; the admin token is {secrets[0]}."},
        {"role": "user", "content": f"Look up the customer at {PLANTED['PHONE'][2]}"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps({"iban": PLANTED["IBAN"][1], "ip": PLANTED["IP"][1]})}}]},
        {"role": "tool", "content": f"found: {PLANTED['CREDIT_CARD'][1]}"},
        {"role": "user", "content": f"Email the result to {email} using {secrets[3]}"}]}
    (root / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    return [str(root / "a.jsonl")], [str(root / "chat.jsonl")]


def _run(tmp_path: Path, name: str, paths: list[str], *sets: str):
    from selectllm import pipeline
    from selectllm.dedup.stage import STAGE
    from selectllm.rundir import RunDir

    cfg = load_config(None, ["input.paths=[" + ", ".join(paths) + "]", "dedup.near.enabled=false", *sets])
    run = tmp_path / name
    pipeline.run_stage(cfg, RunDir(str(run)), STAGE)
    out = run / "dedup"
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]).to_pylist()
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    return run, json.loads((out / "stats.json").read_text()), kept, quarantine


def test_mask_leaves_no_planted_value_in_the_run_dir(spark, tmp_path):
    alpaca, chat = _write_inputs(tmp_path / "in")
    run, stats, kept, quarantine = _run(tmp_path, "a", alpaca, "input.keep=[owner]")
    assert leaks(run, planted_values()) == []
    assert stats["read"] == 5 and stats["kept"] == 4 and stats["quarantined"]["malformed"] == 1
    by_row = {r["source_row"]: r for r in kept}
    assert by_row[0]["instruction"] == "Write a reminder to <EMAIL_1> about the invoice"
    assert by_row[0]["input"] == "Call <PHONE_1> first." and by_row[0]["owner"] == "billing contact <EMAIL_2>"
    assert json.loads(by_row[0]["findings"]) == {"EMAIL": 2, "PHONE": 1}
    assert by_row[1]["instruction"] == "Is <CREDIT_CARD_1> a valid card number?"
    assert by_row[1]["input"] == "Pay into <IBAN_1> from <IP_1>."
    assert json.loads(by_row[2]["findings"]) == {"SECRET": len(PLANTED["SECRET"]), "URL": 1}
    assert by_row[3]["findings"] is None and by_row[3]["instruction"] == "What is the capital of France?"
    assert "<EMAIL_1>" in by_row[0]["text"]  # the embedded text is made from the masked text
    assert "<PHONE_1>" in quarantine[0]["raw"] and "<SECRET_1>" in quarantine[0]["raw"]
    p = stats["privacy"]
    assert p["mode"] == "mask" and p["rows_with_findings"] == 4  # 3 kept rows and the malformed one
    assert p["values"] == {"CREDIT_CARD": 1, "EMAIL": 2, "IBAN": 1, "IP": 1, "PHONE": 2,
                           "SECRET": len(PLANTED["SECRET"]) + 1, "URL": 1}

    # a chat record: system prompt, earlier turns and tool-call arguments are all in `input`
    run, stats, kept, _ = _run(tmp_path, "chat", chat, "input.preset=openai", "input.turn=last")
    assert leaks(run, planted_values()) == []
    (row,) = kept
    assert row["instruction"] == "Email the result to <EMAIL_1> using <SECRET_1>"  # numbered in field order
    assert "System: You help <EMAIL_2>; the admin token is <SECRET_2>." in row["input"]
    assert '[tool call] lookup({"iban": "<IBAN_1>", "ip": "<IP_1>"})' in row["input"]
    assert "Tool: found: <CREDIT_CARD_1>" in row["input"]


def test_drop_quarantines_rows_with_secrets_and_off_masks_nothing(spark, tmp_path):
    alpaca, _ = _write_inputs(tmp_path / "in")
    run, stats, kept, quarantine = _run(tmp_path, "drop", alpaca, "privacy.mode=drop", "input.keep=[owner]")
    assert leaks(run, planted_values()) == []
    assert stats["quarantined"]["secret"] == 1 and stats["kept"] == 3
    (secret,) = [q for q in quarantine if q["reason"] == "secret"]
    assert secret["source_row"] == 2 and json.loads(secret["raw"])["owner"] == "<URL_1>"

    run, stats, kept, _ = _run(tmp_path, "off", alpaca, "privacy.mode=off")
    assert "privacy" not in stats and "findings" not in kept[0]
    assert PLANTED["EMAIL"][0] in {r["source_row"]: r for r in kept}[0]["instruction"]


def test_a_delta_table_is_masked_too(spark, tmp_path):
    deltalake = pytest.importorskip("deltalake")
    table = pa.table({"instruction": [f"Send the report to {PLANTED['EMAIL'][0]}", "List three fruits."],
                      "input": [f"key {PLANTED['SECRET'][0]}", ""], "owner": [PLANTED["PHONE"][0], "x"]})
    deltalake.write_deltalake(str(tmp_path / "lake"), table)
    run, stats, kept, _ = _run(tmp_path, "delta", [str(tmp_path / "lake")], "input.keep=[owner]")
    assert leaks(run, planted_values()) == []
    assert sorted(r["instruction"] for r in kept) == ["List three fruits.", "Send the report to <EMAIL_1>"]
    assert stats["privacy"]["values"] == {"EMAIL": 1, "PHONE": 1, "SECRET": 1}
