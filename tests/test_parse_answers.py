"""Real answers and the forms real models give: what each parses to and its parse class.

``tests/data/smollm2_answers.jsonl`` holds answers collected from SmolLM2-135M-Instruct behind
llama.cpp (``benchmarks/collect_answers.py`` says how); each line carries the parse expected for it.
The hand-written cases below cover the classes of :data:`selectllm.select.parse.PARSE_CLASSES`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selectllm.select.parse import PARSE_CLASSES, UNUSABLE_CLASSES, parse_selection
from selectllm.select.prompts import paper_prompt

CORPUS = Path(__file__).parent / "data" / "smollm2_answers.jsonl"

# (answer, candidates, picks, example ids, expected 0-based positions, expected classes)
CASES = [
    ("[3], [7]", 8, 2, (), [2, 6], []),
    ('{"selected": [7, 3]}', 8, 2, (), [6, 2], []),
    ("<think>[1] is short, [2] is vague, so</think>[5]", 8, 1, (), [4], ["reasoning"]),
    ("<think>candidate [1] looks fine but", 8, 1, (), [], ["reasoning_unfinished"]),
    ("Let me compare [1] and [2] and [6].\nAnswer: [6]", 8, 1, (), [5], ["reasoning"]),
    ("**Final answer:** [2], [4]", 8, 2, (), [1, 3], ["reasoning"]),
    ("4", 8, 1, (), [3], ["bare_numbers"]),
    ("Instruction 4", 8, 1, (), [3], ["bare_numbers"]),
    ("#4 and #7.", 8, 2, (), [3, 6], ["bare_numbers"]),
    ("I would go with 4 because it is long", 8, 1, (), [], ["no_ids"]),
    ("[0, 3]", 8, 2, (), [0, 3], ["zero_based"]),
    ("[10], [13]", 8, 2, (10, 13), [], ["echo_example", "out_of_range"]),
    ("[10], [3]", 8, 2, (10, 13), [2], ["out_of_range", "too_few"]),
    ("I pick [4] because it beats [1] and [2]", 8, 1, (), [], ["prose_ambiguous"]),
    ("I pick [4] because it beats [1] and [2]", 8, 3, (), [3, 0, 1], ["prose"]),
    ("Both [1] and [2] are weak.\n[4]", 8, 1, (), [3], ["prose"]),
    ("The most impactful 2 instructions are:\n- [1] \"Summarize it\"\n- [5] \"Write a poem\"", 8, 2, (),
     [0, 4], []),
    ("1. [2, 3]\n### Instruction: Write a story", 8, 2, (), [1, 2], []),
    ('```json\n{"selected": [2, 5]}\n```', 8, 2, (), [1, 4], ["fenced"]),
    ('{"selected": [2, 5, 1', 8, 3, (), [1, 4], ["truncated_json", "too_few"]),
    ('{"selected": [6, 1', 8, 2, (), [5], ["truncated_json", "too_few"]),
    ("[2], [2], [9]", 8, 2, (), [1], ["out_of_range", "repeated", "too_few"]),
    ("[1], [2], [3]", 8, 2, (), [0, 1], ["too_many"]),
    # SmolLM2-135M counts instead of choosing (tests/data/smollm2_answers.jsonl): no pick, not position 1
    ("[1]\n[2]\n[3]\n[4]\n[5]\n[6]\n[7]\n[8]\n[9]\n[10", 7, 1, (), [], ["lists_all", "out_of_range"]),
    ('{ "selected": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ', 8, 3, (), [], ["lists_all", "out_of_range", "truncated_json"]),
    ("[2], [1]", 2, 1, (), [], ["lists_all"]),
    # both format examples of the paper prompt copied (prompts.paper_example_ids)
    ("1. [10, 13, 16]\n2. [19, 22, 25]\n\nThese instructions are designed to", 8, 3, (10, 13, 16, 19, 22, 25), [],
     ["echo_example", "out_of_range"]),
    ("I'm sorry, I can't help choose among these.", 8, 1, (), [], ["no_ids"]),
    ("   ", 8, 1, (), [], ["empty"]),
    ('{"selected": ["4", true]}', 8, 2, (), [3], ["not_an_id", "too_few"]),
]


@pytest.mark.parametrize("text,n,picks,example,positions,classes", CASES)
def test_each_form_parses_to_its_ids_and_class(text, n, picks, example, positions, classes):
    p = parse_selection(text, n, picks, example=example)
    assert p.positions == positions
    assert sorted(p.classes) == sorted(classes)
    assert p.usable == bool(positions)
    assert all(c in PARSE_CLASSES for c in p.classes)
    if not p.usable:
        assert set(p.classes) & set(UNUSABLE_CLASSES) or "echo_example" in p.classes


def test_the_paper_prompt_flags_either_example_and_a_copied_placeholder_is_no_reason():
    spec = paper_prompt("delimited")
    ex = spec.example(8, 3)
    text = spec.build([("task", "")] * 8, 3, False, False)[0]["content"]
    assert ex == [10, 13, 16, 19, 22, 25] and "[10, 13, 16] or [19, 22, 25]" in text
    p = parse_selection("[1] <one-line reason>\n", 6, 1, reasons=True)
    assert p.positions == [0] and p.reasons == [""]


def test_every_class_is_exercised():
    met = {c for case in CASES for c in case[5]}
    assert met == set(PARSE_CLASSES)


@pytest.mark.skipif(not CORPUS.exists(), reason="the collected answers are not in tests/data")
def test_collected_real_answers_parse_as_recorded():
    lines = [json.loads(x) for x in CORPUS.read_text().splitlines() if x.strip()]
    assert len(lines) >= 20
    for rec in lines:
        p = parse_selection(rec["answer"], rec["candidates"], rec["picks"], rec["kind"] == "reasons",
                            example=tuple(rec["example"]))
        got = {"positions": p.positions, "classes": sorted(p.classes)}
        assert got == rec["expected"], rec["answer"]
