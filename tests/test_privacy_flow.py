"""One binding for row text: walk every stage's declared inputs and every module's imports, and
fail if a consumer of text can reach anything but dedup's masked outputs (or the one source-text
file, selected.jsonl, by a stage that masks what it shows)."""

from __future__ import annotations

import ast
from pathlib import Path

from selectllm import pipeline
from selectllm.privacy import MASKED_OUTPUTS, ROW_READERS, SOURCE_TEXT_OUTPUTS

PACKAGE = Path(__file__).resolve().parents[1] / "selectllm"
# the modules that may read input records: the dedup stage (masks them in its tasks) and the
# privacy.output original path (re-reads selected rows for selected.jsonl only)
READERS_ALLOWED = {"dedup/stage.py", "privacy/original.py", "text/formats.py", "text/chat.py"}
# outputs that carry no row text (vectors, ids, cluster numbers, counts, rendered pages, LLM
# traffic made from masked prompts)
NO_ROW_TEXT = {"embed.vectors", "cluster.assignments", "cluster.centers", "select.decisions", "select.requests",
               "compare.comparison", "compare.page", "report.page", "report.metrics"}


def _refs():
    for stage in pipeline.STAGES + pipeline.ON_DEMAND:
        for name, ref in {**stage.inputs, **stage.optional_inputs}.items():
            yield stage, name, ref


def test_every_declared_input_is_masked_or_carries_no_row_text():
    seen = set()
    for stage, name, ref in _refs():
        producer, output = ref.split(".", 1)
        pipeline.BY_NAME[producer].output(output)  # declared
        seen.add(ref)
        if ref in MASKED_OUTPUTS or ref in NO_ROW_TEXT:
            continue
        allowed = SOURCE_TEXT_OUTPUTS.get(ref)
        assert allowed is not None, f"{stage.name}.{name} binds {ref}: neither masked nor free of row text"
        assert stage.name in allowed, f"{stage.name}.{name} binds {ref}, which may hold source text"
    # the walk saw the text consumers: embed, select, compare, evaluate and report read dedup.rows
    consumers = {s.name for s, _, ref in _refs() if ref == "dedup.rows"}
    assert consumers == {"embed", "select", "compare", "evaluate", "report"}
    assert seen & set(MASKED_OUTPUTS) == {"dedup.rows", "dedup.quarantine", "dedup.stats"}


def test_every_dedup_output_is_made_after_masking():
    dedup = pipeline.BY_NAME["dedup"]
    assert {f"dedup.{o.name}" for o in dedup.outputs} == set(MASKED_OUTPUTS)
    # the reading tasks mask before the id, the text or any quarantine record is made
    src = (PACKAGE / "dedup" / "stage.py").read_text()
    reader = src[src.index("def _reader("):src.index("def _redact(")]
    masked_at = reader.index("redact(row, raw, instr, inp, reason, more)")
    assert masked_at < reader.index('cols["source"].append') < reader.index("content_id(")


def test_no_module_but_dedup_reads_input_records():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in READERS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            offenders += [f"{rel}: {n}" for n in names if n in ROW_READERS]
    assert offenders == []
