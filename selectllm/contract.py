"""The stage contract: what a stage declares next to its code, and what it is handed to run.

A stage module (``selectllm/<stage>/stage.py``) ends with one declaration::

    STAGE = Stage(
        name="embed",
        run=run_stage,                                   # run(ctx) -> flat counts
        inputs={"rows": "dedup.rows"},                   # local name -> "<stage>.<output>"
        outputs=(Output("vectors", "", schema=pa.schema([("id", pa.string())]), check=_vectors_check),),
        settings=Settings(("embed",), exclude={"embed": {"batch_size", "actors"}}),
        resources=Resources(engine="ray", workers=embed_workers),  # (cfg, cluster) -> actors, CPUs, GPUs
    )

The pipeline (``pipeline.py``) runs the stages in the order ``PIPELINE_MODULES`` lists (checking
that every input names an output of an earlier stage), resolves each input to the
committed output it names (``ctx.input("rows")``), reruns a stage when its inputs' commits or its
settings hash change, hands it a staging folder (``ctx.out``) and a work folder that survives a
failed attempt (``ctx.work``: partial results to resume from), checks every declared output's
schema before the commit, then commits atomically (``rundir.py``).  A stage reads another stage's
output only through its declared inputs (no other stage's folder name appears in its code); the
run-wide ``manifest.json`` and ``config.yaml`` are read through ``ctx.run``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pyarrow as pa

from selectllm.config import Config
from selectllm.errors import UserError
from selectllm.rundir import RunDir

SchemaSpec = pa.Schema | Callable[[Config], pa.Schema] | None


@dataclass(frozen=True)
class Output:
    """One named output of a stage.

    ``path`` is relative to the stage's folder: ``""`` = the folder's ``part-*.parquet`` files,
    a folder name = that folder's Parquet files, a file name = that file.  ``root=True`` files are
    moved to the run directory's root at commit (``selected.jsonl``, ``report.html``).  Parquet
    outputs with a ``schema`` are checked at commit: every declared column present with its type
    (extra columns are allowed).
    """

    name: str
    path: str = ""
    schema: SchemaSpec = None
    root: bool = False
    optional: bool = False
    check: Callable[[pa.Schema], str | None] | None = None  # further rule on a written file's schema


@dataclass(frozen=True)
class Resources:
    """What a stage runs on, and how big.  ``engine``: ``spark`` | ``ray`` | ``local``.
    ``workers``: the function that sizes the stage's Ray workers on the running cluster,
    ``workers(cfg, cluster, **facts) -> dict`` (``cluster`` is ``ray.cluster_resources()``,
    ``facts`` what only the stage knows, such as its row count): an actor pool's ``workers`` (how
    many), ``cpus_per_worker`` and ``gpus_per_worker`` (Ray's ``num_cpus`` / ``num_gpus``); a stage
    that runs selection strategies its tasks' ``task_cpus`` and its LLM pool's ``llm_actors`` and
    ``llm_cpus_per_actor`` (``select.stage.select_workers``).  The stage starts
    its workers with what ``ctx.workers(**facts)`` returns and sizes nothing itself; the manifest
    records the same values under ``resources`` (the scalars; a stage that asks several times: the
    last value of each)."""

    engine: str = "local"
    workers: Callable[..., dict] | None = None


def stable_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Settings:
    """The config that changes a stage's output: whole sections minus speed-only keys, plus values
    derived from the config (``extra``, e.g. the resolved ``cluster.k``).  Changing any of them
    makes the stage (and every stage after it) rerun; changing an excluded key does not."""

    sections: tuple[str, ...] = ()
    exclude: Mapping[str, set[str]] = field(default_factory=dict)
    extra: Callable[[Config], tuple] | None = None
    version: str | None = None  # bump to rerun on a code change that alters the output

    def hash(self, cfg: Config) -> str:
        base = cfg.section_hash(*self.sections, exclude={k: set(v) for k, v in self.exclude.items()})
        if self.extra is None and self.version is None:
            return base
        extra = self.extra(cfg) if self.extra is not None else ()
        if self.version is not None:
            return stable_hash(self.version, *extra) if not self.sections else stable_hash(base, self.version, *extra)
        return stable_hash(base, *extra)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[["StageContext"], dict]
    inputs: Mapping[str, str] = field(default_factory=dict)  # local name -> "<stage>.<output>"
    outputs: tuple[Output, ...] = ()
    # read when committed, never waited for: outputs of a stage that may run later or not at all
    # (the report shows `selectllm compare`'s table when it ran).  Not part of the run order; part
    # of the input fingerprint once committed (a new comparison reruns the report).
    optional_inputs: Mapping[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    resources: Resources = field(default_factory=Resources)
    # raw inputs outside the run directory (dedup: the files named by input.paths) -> fingerprint
    external_inputs: Callable[[Config], str] | None = None
    # counts -> why the committed output holds nothing for the stages after it (None: it does);
    # the run stops there with that line, the output kept for a look (dedup: its quarantine)
    empty: Callable[[dict], str | None] | None = None
    # reads the programme's history (``history.path``): what it holds is part of the fingerprint
    reads_history: bool = False
    doc: str = ""

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages this one reads, in declaration order, each once."""
        seen: list[str] = []
        for ref in self.inputs.values():
            s = ref.split(".", 1)[0]
            if s not in seen:
                seen.append(s)
        return tuple(seen)

    def output(self, name: str) -> Output:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(f"stage '{self.name}' declares no output '{name}'")

    @property
    def root_files(self) -> tuple[str, ...]:
        return tuple(o.path for o in self.outputs if o.root)


@dataclass
class StageInput:
    """A committed output of an upstream stage, as a stage sees it through ``ctx.input(name)``."""

    run: RunDir
    stage: str
    output: Output

    @property
    def path(self) -> str:
        """Filesystem path (no protocol) of the file or folder."""
        if self.output.root:  # moved to the run directory's root at commit
            return self.run.path(self.output.path)
        return self.run.path(self.stage, self.output.path) if self.output.path else self.run.path(self.stage)

    @property
    def uri(self) -> str:
        return self.run.staging_uri(self.path)

    def exists(self) -> bool:
        return self.run.fs.exists(self.path)

    def files(self) -> list[str]:
        """The Parquet files of this output: ``part-*.parquet`` of a stage folder, every Parquet
        file of a sub-folder, or the one file."""
        fs = self.run.fs
        if not fs.exists(self.path):
            return []
        if not fs.isdir(self.path):
            return [self.path]
        names = sorted(p for p in fs.ls(self.path, detail=False) if p.endswith(".parquet"))
        if not self.output.path:
            names = [p for p in names if p.rsplit("/", 1)[-1].startswith("part-")]
        return names

    def dataset(self):
        import pyarrow.dataset as pds

        files = self.files()
        if not files:
            schema = _schema_of(self.output)
            return pds.dataset(pa.Table.from_batches([], schema=schema) if schema is not None else pa.table({}))
        return pds.dataset(files, format="parquet", filesystem=self.run.fs)

    def read(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        if filter is None:
            return self.dataset().to_table(columns=columns)
        # a filtered scan keeps few rows of many: one thread, and Arrow's pool emptied after it,
        # so the memory of every batch it decoded is not kept by this process
        from selectllm.io import release_arrow_memory

        table = self.dataset().to_table(columns=columns, filter=filter, use_threads=False)
        release_arrow_memory()
        return table

    def num_rows(self) -> int:
        import pyarrow.parquet as pq

        total = 0
        for p in self.files():
            with self.run.fs.open(p, "rb") as f:
                total += pq.read_metadata(f).num_rows
        return total

    def read_json(self) -> Any:
        return json.loads(self.run.fs.cat_file(self.path).decode("utf-8"))

    def read_text(self) -> str:
        return self.run.fs.cat_file(self.path).decode("utf-8")


def _schema_of(output: Output, cfg: Config | None = None) -> pa.Schema | None:
    spec = output.schema
    if spec is None or isinstance(spec, pa.Schema):
        return spec
    return spec(cfg) if cfg is not None else None


@dataclass
class StageContext:
    """What a stage is handed: the config, the run directory, where to write, what to read."""

    cfg: Config
    run: RunDir
    stage: str
    out: str  # staging folder, filesystem path without protocol
    work: str = ""  # survives failed attempts of the same inputs + settings; removed after commit
    spec: Stage | None = None
    resolve: Callable[[str], tuple[str, Output]] | None = None  # "<stage>.<output>" -> declaration
    log: Any = None
    sized: dict = field(default_factory=dict)  # what ctx.workers() returned (for the manifest)

    def __post_init__(self) -> None:
        if self.log is None:
            from selectllm.console import console

            self.log = console

    @property
    def out_uri(self) -> str:
        return self.run.staging_uri(self.out)

    def out_path(self, *parts: str) -> str:
        return posixpath.join(self.out, *parts)

    def workers(self, **facts: Any) -> dict:
        """The stage's workers on the running Ray cluster, sized by its ``Resources.workers``
        (kept in ``sized`` for the manifest, merged over what earlier calls returned)."""
        import ray

        sizer = self.spec.resources.workers if self.spec is not None else None
        if sizer is None:
            raise RuntimeError(f"stage '{self.stage}' declares no Resources.workers")
        sized = sizer(self.cfg, ray.cluster_resources(), **facts)
        self.sized.update(sized)  # in place: a copy of this context (compare's per strategy) records here too
        return sized

    def input(self, name: str) -> StageInput:
        """A declared input (or optional input), resolved to the committed output it names."""
        declared = {**self.spec.inputs, **self.spec.optional_inputs} if self.spec is not None else {}
        if name not in declared:
            raise KeyError(f"stage '{self.stage}' declares no input '{name}' (declared: {', '.join(declared) or 'none'})")
        ref = declared[name]
        stage, output = self.resolve(ref)  # type: ignore[misc]
        return StageInput(self.run, stage, output)

    def has_input(self, name: str) -> bool:
        """Whether a declared input's stage has committed output (the report tolerates missing ones)."""
        try:
            return self.input(name).exists() and self.run.stage_entry(self.input(name).stage).get("status") == "complete"
        except KeyError:
            return False


def check_outputs(stage: Stage, ctx: StageContext) -> None:
    """Before the commit: every declared output exists (unless optional) and every Parquet output
    carries its declared columns with their types.  Raises a RuntimeError naming the difference."""
    import pyarrow.parquet as pq

    fs = ctx.run.fs
    for o in stage.outputs:
        path = ctx.out_path(o.path) if o.path else ctx.out
        if not fs.exists(path):
            if o.optional:
                continue
            raise RuntimeError(f"stage '{stage.name}' did not write its output '{o.name}' ({o.path or 'part files'})")
        schema = _schema_of(o, ctx.cfg)
        if schema is None and o.check is None:
            continue
        if fs.isdir(path):
            files = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
            if not o.path:
                files = [p for p in files if p.rsplit("/", 1)[-1].startswith("part-")]
        else:
            files = [path]
        for p in files:
            with fs.open(p, "rb") as f:
                actual = pq.read_schema(f)
            problem = o.check(actual) if o.check is not None else None
            if problem:
                raise RuntimeError(f"stage '{stage.name}' output '{o.name}' ({p.rsplit('/', 1)[-1]}): {problem}")
            for want in schema or ():
                idx = actual.get_field_index(want.name)
                if idx < 0:
                    raise RuntimeError(f"stage '{stage.name}' output '{o.name}' ({p.rsplit('/', 1)[-1]}) "
                                       f"lacks column '{want.name}'")
                got = actual.field(idx).type
                if not got.equals(want.type) and not (pa.types.is_large_string(got) and want.type == pa.string()):
                    raise RuntimeError(f"stage '{stage.name}' output '{o.name}' column '{want.name}' is {got}, "
                                       f"declared {want.type}")


def missing_upstream(stage: Stage, up: str) -> UserError:
    return UserError(f"stage '{stage.name}' needs stage '{up}' first (run `selectllm {up}` or `selectllm run`)")
