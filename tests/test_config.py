import pytest
import yaml

from selectllm.config import dump_config, load_config
from selectllm.errors import UserError


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("select: {budget: 10}\ninput: {paths: [a.jsonl]}\n")
    cfg = load_config(p, ["select.budget=20", "llm.rpm=5", "input.paths=[x.jsonl, y.jsonl]", "spark.conf={a.b: 1}"])
    assert cfg.select.budget == 20 and cfg.llm.rpm == 5
    assert cfg.input.paths == ["x.jsonl", "y.jsonl"] and cfg.spark.conf == {"a.b": "1"}


@pytest.mark.parametrize("override,needle", [
    ("select.budgett=3", "unknown key 'select.budgett'"),
    ("nope=1", "unknown key 'nope'"),
    ("select.budget=abc", "select.budget"),
    ("select.strategy=best", "select.strategy"),
    ("llm.max_usd=-1", "llm.max_usd"),
    ("select.picks_per_prompt=10", "picks_per_prompt must be smaller"),
    ("budget", "--set expects key=value"),
])
def test_errors_are_one_line_and_name_the_key(override, needle):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "s.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(scalar)


def test_dump_has_no_secret(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    text = dump_config(load_config(None, []))
    assert "sk-secret-123" not in text and yaml.safe_load(text)["llm"]["api_key_env"] == "OPENAI_API_KEY"
