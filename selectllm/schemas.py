"""The one data type per boundary: Arrow schemas of every table in the run directory (README,
"Run directory, resume and atomic stages")."""

from __future__ import annotations

import pyarrow as pa

DEDUP = pa.schema(
    [
        ("id", pa.string()),  # stable hash of the normalized text
        ("instruction", pa.string()),  # as in the source (never normalized)
        ("input", pa.string()),  # as in the source ("" when the record has none)
        ("text", pa.string()),  # what is embedded (the template applied to the normalized texts)
        ("source", pa.string()),  # the file it came from
        ("source_row", pa.int64()),  # 0-based record index in that file
    ]
)

QUARANTINE = pa.schema(
    [
        ("raw", pa.string()),
        ("source", pa.string()),
        ("source_row", pa.int64()),
        ("reason", pa.string()),
    ]
)

# dedup/duplicates.parquet: every row removed as a duplicate, and what it duplicates
DUPLICATES = pa.schema(
    [
        ("id", pa.string()),
        ("duplicate_of", pa.string()),
        ("similarity", pa.float32()),
        ("kind", pa.string()),  # exact | near | seen (a row an earlier run of the programme saw: history)
        ("source", pa.string()),
        ("source_row", pa.int64()),
    ]
)

# privacy (selectllm/privacy): a row with a secret under privacy.mode drop; a row a detector could
# not finish on (failed closed: no text of it is kept)
SECRET, PRIVACY_TIMEOUT = "secret", "privacy_timeout"
QUARANTINE_REASONS = ("malformed", "empty", "too_long", "bad_encoding", "missing_field", "wrong_type",
                      "no_user_turn", "malformed_turn", "unreadable", SECRET, PRIVACY_TIMEOUT,
                      "low_quality")
# dedup/part-*.parquet's last column when privacy is on: what was masked in the row, as JSON
# {"EMAIL": 2, "SECRET": 1} (distinct values per entity type; never the values), null when nothing
FINDINGS = pa.field("findings", pa.string())

# extra columns of dedup/part-*.parquet (after the DEDUP ones) for a chat preset (input.preset
# openai | sharegpt | lmsys); the input.keep columns (strings) come after them
CHAT_COLUMNS = pa.schema([("user_turn", pa.int64()), ("media_parts", pa.int64())])


def embed_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema([("id", pa.string()), ("embedding", pa.list_(value, dim))])


ASSIGNMENTS = pa.schema(
    [
        ("id", pa.string()),
        ("cluster_id", pa.int64()),
        ("distance", pa.float32()),
        ("is_center", pa.bool_()),
    ]
)

CENTERS = pa.schema(
    [
        ("cluster_id", pa.int64()),  # the order in which centers were chosen, 0 first
        ("id", pa.string()),
        ("size", pa.int64()),
        ("radius", pa.float32()),
    ]
)

DECISIONS = pa.schema(
    [
        ("group_id", pa.int64()),
        ("cluster_id", pa.int64()),
        ("candidate_ids", pa.list_(pa.string())),
        ("chosen_ids", pa.list_(pa.string())),
        ("chosen_by", pa.list_(pa.string())),  # per chosen id: llm | fallback | no_llm (SELECTED_STATUSES)
        ("status", pa.string()),  # ok | fallback | budget_stopped | error
        ("reason", pa.string()),  # why a group fell back ('' when ok)
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("usd", pa.float64()),
        # select.reasons: the LLM's one-line reason per chosen id, aligned with chosen_ids
        # ("" for a pick the LLM did not make or gave no reason for; all "" without select.reasons)
        ("chosen_reasons", pa.list_(pa.string())),
        # LLM groups (null / empty / 0 for a group that needed no LLM): the order the candidates
        # were shown in (shown_order[p] = index in candidate_ids of shown position p + 1), the
        # 1-based shown positions the LLM's usable answers picked, the answers' parse classes
        # (select.parse.PARSE_CLASSES, "repaired"), requests asked (views + repairs), the share of
        # the quota two orders agreed on (select.permutations: 2), why the group fell back
        # ("" when the LLM decided it: budget_stopped | error: <cause> | unusable: <parse class>)
        ("shown_order", pa.list_(pa.int32())),
        ("picked_positions", pa.list_(pa.int32())),
        ("parse", pa.list_(pa.string())),
        ("asks", pa.int32()),
        ("agreement", pa.float64()),
        ("cause", pa.string()),
    ]
)

DECISION_STATUSES = ("ok", "fallback", "budget_stopped", "error")

SELECTED_FIELDS = ("id", "instruction", "input", "source", "cluster_id", "strategy", "source_row", "status")
# selected.jsonl's status: the LLM chose the row | an LLM-free pick stood in for an LLM answer
# (unusable answer, error, budget stop, top-up) | no LLM was asked (small cluster, LLM-free strategy)
SELECTED_STATUSES = ("llm", "fallback", "no_llm")
