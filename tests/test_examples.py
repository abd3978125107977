"""The example configs a newcomer copies: valid, and they leave to the code what it sizes itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from selectllm.config import Config, load_config
from selectllm.pipeline import BY_NAME

from helpers import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_leaves(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def sized_by_the_code() -> set[str]:
    """Keys that change no stage's output (a stage's Settings.exclude) and default to ``auto``: the
    code sizes them per backend and machine (a fixed value is an override that goes stale)."""
    defaults = _leaves(Config().model_dump())
    return {f"{section}.{k}" for s in BY_NAME.values() for section, keys in s.settings.exclude.items()
            for k in keys if defaults.get(f"{section}.{k}") == "auto"}


def test_there_are_examples_and_keys_the_code_sizes():
    assert any(p.name == "demo.yaml" for p in EXAMPLES)
    assert {"embed.batch_size", "embed.actors", "embed.threads", "cluster.shards"} <= sized_by_the_code()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_loads_and_leaves_what_the_code_sizes_at_auto(path: Path):
    cfg = _leaves(load_config(str(path)).model_dump())  # every key known, every value valid
    for key in sorted(sized_by_the_code()):
        assert cfg[key] == "auto", f"{path.name} fixes {key}, which the code sizes per backend and machine"
    assert set(_leaves(yaml.safe_load(path.read_text()))).isdisjoint(sized_by_the_code())
