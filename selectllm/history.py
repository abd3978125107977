"""The history of a selection programme: what earlier runs saw, selected and spent.

A programme (one team selecting every week from growing logs) points every run at one history
(``history: <local path or URL>``).  Layout, all through fsspec (local disk or object storage)::

    history.json                      the index: format version, commits in order (below)
    runs/<run_id>/<token>/seen/       ids of every row the run kept or removed as a near copy
    runs/<run_id>/<token>/minhash/    with near dedup on: the MinHash rows (id, band keys, shingle
                                      hashes) of every row the run kept or removed as a near copy
                                      (of its own rows or an earlier run's); the summary's ``minhash``
                                      names the settings they were made with
    runs/<run_id>/<token>/selected.parquet   the run's selection: id, instruction, input,
                                      cluster_id, embedding (its vector), run_id
    imports/<token>/status.parquet    ``selectllm history import``: id, status (annotated|rejected)
    cache/llm/                        the programme's LLM answer cache (content-addressed)
    lock.json                         held by the run (or import) writing to the history now

Commit protocol (as a stage commit, ``rundir.py``): a run writes its files under a fresh token,
then rewrites ``history.json`` (a temporary name renamed into place locally, one PUT on an
object store); files no commit names are leftovers of a killed run and are never read.  A run is
recorded once, after its ``select`` stage is complete; recording it again (a rerun, ``--force``)
replaces only that run's own commit and keeps its place in the order.  A run sees the commits
made before its own (all of them while it is not recorded yet), so rerunning week 3 after week 4
reads what week 3 read.  Two runs at once are refused with one line: the first holds
``lock.json`` (created exclusively: ``O_EXCL`` locally, a conditional PUT on S3) and refreshes
its heartbeat; a lock whose owner died on this host, or whose heartbeat is older than
:data:`STALE_S`, is taken over.  A history written by a newer format is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selectllm.errors import UserError
from selectllm.rundir import is_url, open_location, replace_local_file, storage_options

FORMAT = "selectllm-history"
VERSION = 1  # bump when the layout changes; older versions are read, newer ones refused
INDEX = "history.json"
LOCK = "lock.json"
HEARTBEAT_S = 20.0  # the lock holder rewrites the lock this often
STALE_S = 300.0  # a lock not refreshed for this long belongs to a dead run on another host
STATUSES = ("annotated", "rejected")

SEEN = pa.schema([("id", pa.string())])
STATUS = pa.schema([("id", pa.string()), ("status", pa.string())])


def selected_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("instruction", pa.string()), ("input", pa.string()),
                      ("cluster_id", pa.int64()), ("embedding", pa.list_(pa.float32(), dim)),
                      ("run_id", pa.string())])


def run_id_for(run_url: str) -> str:
    """A run of the programme is a run directory: its name and a hash of its full URL."""
    name = posixpath.basename(run_url.rstrip("/")) or "run"
    return f"{name}-{hashlib.sha256(run_url.encode()).hexdigest()[:8]}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class History:
    def __init__(self, url: str) -> None:
        self.url, self.fs, self.root = open_location(url, "history")
        self.remote = is_url(url)

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, *parts: str) -> str:
        p = self.path(*parts)
        return f"{self.url.split('://', 1)[0]}://{p}" if self.remote else p

    # ------------------------------------------------------------------ index
    def index(self) -> dict:
        p = self.path(INDEX)
        try:
            data = self.fs.cat_file(p)
        except FileNotFoundError:
            return {"format": FORMAT, "version": VERSION, "next_seq": 1, "commits": []}
        try:
            idx = json.loads(data)
        except ValueError:
            raise UserError(f"history {self.url}: {INDEX} is not JSON (not a selectllm history?)") from None
        if not isinstance(idx, dict) or idx.get("format") != FORMAT:
            raise UserError(f"history {self.url}: {INDEX} is not a selectllm history index")
        version = idx.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise UserError(f"history {self.url} has format version {version}; this selectllm reads "
                            f"versions up to {VERSION} (upgrade selectllm)")
        return idx

    def _write_index(self, idx: dict) -> None:
        data = (json.dumps(idx, indent=1, sort_keys=True) + "\n").encode()
        final = self.path(INDEX)
        if self.remote:
            self.fs.pipe_file(final, data)  # one PUT: readers see the old or the new object
            return
        replace_local_file(final, data)

    def commits(self) -> list[dict]:
        return list(self.index()["commits"])

    def view(self, run_id: str | None) -> list[dict]:
        """What ``run_id`` reads: the commits made before its own (all while it is unrecorded)."""
        commits = self.commits()
        own = [c["seq"] for c in commits if c.get("run_id") == run_id]
        return [c for c in commits if c.get("run_id") != run_id and (not own or c["seq"] < own[0])]

    @staticmethod
    def token(commits: list[dict]) -> str:
        """Names the content of a view: a new commit, or a rewritten one, changes it."""
        return hashlib.sha256(json.dumps([(c["seq"], c["token"]) for c in commits]).encode()).hexdigest()[:16]

    def own(self, run_id: str) -> dict | None:
        return next((c for c in self.commits() if c.get("run_id") == run_id), None)

    # ------------------------------------------------------------------ reading
    def files(self, commits: list[dict], name: str) -> list[str]:
        """Paths (no protocol) of the Parquet files of table ``name`` in these commits."""
        out: list[str] = []
        for c in commits:
            for rel in c.get("files", {}).get(name, []):
                p = self.path(rel)
                if rel.endswith("/"):
                    out += sorted(f for f in self.fs.find(p) if f.endswith(".parquet"))
                else:
                    out.append(p)
        return out

    def folders(self, commits: list[dict], name: str) -> list[str]:
        """URIs (with protocol) of the folders/files of table ``name``: for Spark's readers."""
        return [self.uri(rel) for c in commits for rel in c.get("files", {}).get(name, [])]

    def read(self, commits: list[dict], name: str, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
        tables = []
        for p in self.files(commits, name):
            with self.fs.open(p, "rb") as f:
                tables.append(pq.read_table(f, columns=columns))
        if not tables:
            return schema.empty_table().select(columns or schema.names)
        return pa.concat_tables(tables, promote_options="permissive")

    def selections(self, commits: list[dict], columns: list[str] | None = None) -> pa.Table:
        """Every earlier selection (of the runs in ``commits``) as one table."""
        runs = [c for c in commits if c["kind"] == "run"]
        dim = next((c["summary"].get("dim") for c in runs if c["summary"].get("dim")), 1)
        return self.read(runs, "selected", selected_schema(dim), columns)

    def prior_vectors(self, commits: list[dict], dim: int) -> np.ndarray:
        """The vectors of every earlier selection: where the cluster stage's farthest-first starts."""
        runs = [c for c in commits if c["kind"] == "run" and c["summary"].get("selected")]
        for c in runs:
            if c["summary"].get("dim") not in (None, dim):
                raise UserError(f"history {self.url}: run {c['run_id']} embedded with {c['summary'].get('dim')} "
                                f"dimensions ({c['summary'].get('embed_model')}), this run with {dim}: a programme "
                                "keeps one embedding model")
        table = self.selections(runs, ["embedding"])
        if table.num_rows == 0:
            return np.zeros((0, dim), dtype=np.float32)
        col = table.column("embedding").combine_chunks()
        return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)

    def annotated(self, commits: list[dict]) -> dict:
        """How the annotated rows (imports) of ``commits`` reach the cluster stage: ``steering``, those
        an earlier run selected (their vector is in the history: a prior center); ``not_steering``,
        ids only (never selected by a run of the programme; nothing but the id is known of them, and
        a run drops them as ``seen`` before embedding): counted, never guessed."""
        import pyarrow.compute as pc

        imports = [c for c in commits if c["kind"] == "import"]
        status = self.read(imports, "status", STATUS)
        ids = pc.unique(status.filter(pc.equal(status.column("status"), "annotated")).column("id"))
        picked = self.selections([c for c in commits if c["kind"] == "run"], ["id"]).column("id")
        steering = int(pc.sum(pc.is_in(ids, value_set=picked.combine_chunks())).as_py() or 0) if len(ids) else 0
        return {"annotated": len(ids), "annotated_steering": steering, "annotated_not_steering": len(ids) - steering}

    def spent(self, commits: list[dict]) -> float:
        return float(sum(c["summary"].get("usd", 0.0) for c in commits if c["kind"] == "run"))

    # ------------------------------------------------------------------ writing (under the lock)
    def commit(self, kind: str, tables: dict[str, Any], summary: dict, run_id: str | None = None,
               extra: dict | None = None) -> dict:
        """Write a commit's tables under a fresh token, then the index.  ``tables``: name ->
        a ``pa.Table`` (one file) or a callable ``write(fs, folder) -> None`` (a folder).
        A run's earlier commit is replaced in place (same seq); its files are removed after."""
        t0 = time.perf_counter()
        token = uuid.uuid4().hex[:12]
        base = posixpath.join("runs", run_id, token) if kind == "run" else posixpath.join("imports", token)
        files: dict[str, list[str]] = {}
        for name, value in tables.items():
            if isinstance(value, pa.Table):
                rel = posixpath.join(base, f"{name}.parquet")
                self.fs.makedirs(posixpath.dirname(self.path(rel)), exist_ok=True)
                with self.fs.open(self.path(rel), "wb") as f:
                    pq.write_table(value, f)
            else:
                rel = posixpath.join(base, name) + "/"
                self.fs.makedirs(self.path(rel), exist_ok=True)
                value(self.fs, self.path(rel))
            files[name] = [rel]
        idx = self.index()
        entry = {"kind": kind, "token": token, "files": files, "summary": summary, "finished_at": _now(),
                 "write_seconds": round(time.perf_counter() - t0, 3), **(extra or {})}
        if run_id is not None:
            entry["run_id"] = run_id
        old = next((c for c in idx["commits"] if run_id is not None and c.get("run_id") == run_id), None)
        if old is not None:
            entry["seq"] = old["seq"]
            idx["commits"] = [entry if c is old else c for c in idx["commits"]]
        else:
            entry["seq"] = int(idx.get("next_seq", 1))
            idx["next_seq"] = entry["seq"] + 1
            idx["commits"].append(entry)
        idx["version"] = VERSION
        idx["updated_at"] = _now()
        self._write_index(idx)
        if old is not None:  # the replaced commit's files: nothing names them any more
            old_base = posixpath.join("runs", run_id, old["token"])
            if self.fs.exists(self.path(old_base)):
                self.fs.rm(self.path(old_base), recursive=True)
        return entry

    def lock(self, owner: str) -> "HistoryLock":
        return HistoryLock(self, owner)


# ---------------------------------------------------------------------------------- the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HistoryLock:
    """``lock.json`` held for the whole run: created exclusively, refreshed by a heartbeat thread,
    removed at release.  A second holder is refused with one line naming the first."""

    def __init__(self, history: History, owner: str) -> None:
        self.h = history
        self.owner = owner
        self.path = history.path(LOCK)
        self.nonce = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "nonce": self.nonce, "heartbeat": time.time(), "since": _now()}).encode()

    def _create(self) -> bool:
        """Create the lock only if absent; True when this call created it."""
        fs, data = self.h.fs, self._body()
        if not self.h.remote:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if getattr(fs, "protocol", None) and set(np.atleast_1d(fs.protocol)) & {"s3", "s3a"}:
            bucket, _, key = self.path.partition("/")
            try:
                fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except Exception as e:  # 412 Precondition Failed: someone holds it
                text = f"{type(e).__name__} {e}"
                if "PreconditionFailed" in text or "412" in text or isinstance(e, FileExistsError):
                    return False
                raise
        # other object stores: check, put, read back (a race of two starts in the same instant
        # is decided by the read-back: the last writer holds it, the other sees a foreign nonce)
        if fs.exists(self.path):
            return False
        fs.pipe_file(self.path, data)
        time.sleep(0.2)
        return self._read().get("nonce") == self.nonce

    def _read(self) -> dict:
        try:
            return json.loads(self.h.fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return {}

    def _stale(self, info: dict) -> bool:
        if not info:
            return True
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not _pid_alive(info["pid"]):
                return True
        return time.time() - float(info.get("heartbeat", 0)) > STALE_S

    def acquire(self) -> "HistoryLock":
        for _ in range(3):
            if self._create():
                break
            info = self._read()
            if not self._stale(info):
                age = time.time() - float(info.get("heartbeat", 0))
                raise UserError(f"history {self.h.url} is in use by {info.get('owner')} (host {info.get('host')}, "
                                f"pid {info.get('pid')}, heartbeat {age:.0f}s ago): one run at a time")
            try:  # a dead holder's lock: taken over
                self.h.fs.rm(self.path)
            except FileNotFoundError:
                pass
        else:
            raise UserError(f"history {self.h.url}: could not take {LOCK}")
        self._thread = threading.Thread(target=self._beat, daemon=True, name="history-heartbeat")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self._read().get("nonce") != self.nonce:
                return  # taken over (we were presumed dead): never write over the new holder
            try:
                self.h.fs.pipe_file(self.path, self._body())
            except Exception:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._read().get("nonce") == self.nonce:
            try:
                self.h.fs.rm(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "HistoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------ a run and its history
COVERAGE_SAMPLE = 20_000  # pool rows a run's coverage figures are measured on (seeded sample)


def minhash_settings(cfg) -> dict:
    """What an earlier run's MinHash rows must have been made with to be compared with this
    run's: shingles, permutations, bands, what ``sh`` holds (shingle hashes, or signatures)."""
    from selectllm.text.minhash import SEED, bands_rows

    near = cfg.dedup.near
    bands, rows = bands_rows(near.threshold, near.num_perm, near.bands)
    return {"ngram": near.ngram, "shingle": near.shingle, "num_perm": near.num_perm, "bands": bands,
            "rows": rows, "verify": near.verify, "seed": SEED}


def _copy_files(src_fs, files: list[str], fs, folder: str) -> int:
    """Copy Parquet files as bytes (one buffer at a time) into ``folder``: ``part-00000.parquet``, ..."""
    import shutil

    done = 0
    for i, p in enumerate(files):
        with src_fs.open(p, "rb") as a, fs.open(posixpath.join(folder, f"part-{i:05d}.parquet"), "wb") as b:
            shutil.copyfileobj(a, b, 8 << 20)
        done += 1
    return done


def open_history(cfg) -> History | None:
    return History(cfg.history.path) if cfg.history.path else None


def run_view(cfg, run) -> tuple[History, str, list[dict]]:
    h = History(cfg.history.path)
    rid = run_id_for(run.url)
    return h, rid, h.view(rid)


def view_token(cfg, run) -> str:
    """Part of the input fingerprint of the stages that read the history (dedup, cluster)."""
    _, _, view = run_view(cfg, run)
    return History.token(view)


def _coverage(x: np.ndarray, centers: np.ndarray) -> tuple[float, float]:
    """(mean, max) cosine distance of the rows of ``x`` to their nearest center."""
    if len(centers) == 0 or len(x) == 0:
        return 1.0, 1.0
    best = np.full(len(x), -np.inf, dtype=np.float32)
    for s in range(0, len(centers), 4096):
        np.maximum(best, (x @ centers[s:s + 4096].T).max(axis=1), out=best)
    d = np.maximum(1.0 - best, 0.0)
    return float(d.mean()), float(d.max())


def pool_sample(vec, rows: int = COVERAGE_SAMPLE, seed: int = 0) -> np.ndarray:
    """A seeded sample of about ``rows`` of a run's vectors (a StageInput), one part at a time."""
    run = vec.run
    n = vec.num_rows()
    rate = min(1.0, rows / max(1, n))
    rng = np.random.default_rng(seed)
    out = []
    for p in vec.files():
        with run.fs.open(p, "rb") as f:
            col = pq.read_table(f, columns=["embedding"]).column("embedding").combine_chunks()
        dim = col.type.list_size
        keep = np.flatnonzero(rng.random(len(col)) < rate)
        if len(keep):
            x = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
            out.append(x[keep])
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def record_run(cfg, run, read, log=None) -> dict | None:
    """Add a completed run (its ``select`` committed) to the history, once per select commit.
    ``read("<stage>.<output>")``: the committed output (a StageInput) the pipeline resolves.

    Returns the commit, or None when there is nothing to record (select not complete) or the
    history already holds this select commit."""
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    sel_entry = run.stage_entry("select") or {}
    if sel_entry.get("status") != "complete":
        return None
    h, rid, view = run_view(cfg, run)
    own = h.own(rid)
    if own is not None and own.get("select_token") == sel_entry.get("output_token"):
        return None
    dedup = run.stage_entry("dedup") or {}
    rows = read("dedup.rows")

    def write_seen(fs, folder: str) -> None:
        for i, p in enumerate(rows.files()):
            with run.fs.open(p, "rb") as f:
                ids = pq.read_table(f, columns=["id"])
            with fs.open(posixpath.join(folder, f"part-{i:05d}.parquet"), "wb") as f:
                pq.write_table(ids.cast(SEEN), f)
        near = read("dedup.duplicates").read(["id"], filter=pc.field("kind") == "near")
        with fs.open(posixpath.join(folder, "near.parquet"), "wb") as f:
            pq.write_table(near.cast(SEEN), f)

    picked = [json.loads(line) for line in read("select.selected").read_text().splitlines() if line.strip()]
    ids = [r["id"] for r in picked]
    vec = read("embed.vectors").read(["id", "embedding"], filter=pc.field("id").isin(ids))
    dim = vec.schema.field("embedding").type.list_size
    by_id = {i: k for k, i in enumerate(vec.column("id").to_pylist())}
    emb = np.asarray(vec.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False),
                     dtype=np.float32).reshape(-1, dim)
    if len(by_id) != len(ids):
        raise RuntimeError(f"history: {len(ids) - len(by_id)} selected rows have no vector")
    mine = emb[[by_id[i] for i in ids]] if ids else np.zeros((0, dim), np.float32)
    # the texts as dedup kept them (masked when privacy is on), never selected.jsonl's source text
    texts = read("dedup.rows").read(["id", "instruction", "input"], filter=pc.field("id").isin(ids))
    text = {i: (a, b) for i, a, b in zip(texts.column("id").to_pylist(), texts.column("instruction").to_pylist(),
                                         texts.column("input").to_pylist())}
    selected = pa.table({
        "id": ids, "instruction": [text[i][0] for i in ids], "input": [text[i][1] for i in ids],
        "cluster_id": pa.array([int(r["cluster_id"]) for r in picked], pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(mine.reshape(-1), pa.float32()), dim),
        "run_id": [rid] * len(ids)}, schema=selected_schema(dim))
    prior = h.prior_vectors(view, dim)
    x = pool_sample(read("embed.vectors"), seed=cfg.select.seed)
    cov_run = _coverage(x, mine)
    cov_all = _coverage(x, np.concatenate([prior, mine]))
    dc, sc = dedup.get("counts", {}), sel_entry.get("counts", {})
    summary = {"read": dc.get("read"), "kept": dc.get("kept"), "seen_duplicates": dc.get("seen_duplicates", 0),
               "selected": len(ids), "usd": float(sc.get("usd", 0.0)), "strategy": cfg.select.strategy,
               "budget": cfg.select.budget, "embed_model": cfg.embed.model, "dim": dim,
               "prior_selections": int(len(prior)),
               "coverage_mean_run": cov_run[0], "coverage_max_run": cov_run[1],
               "coverage_mean_cumulative": cov_all[0], "coverage_max_cumulative": cov_all[1],
               "coverage_sample": int(len(x)), "prepare_seconds": round(time.perf_counter() - t0, 3)}
    tables = {"seen": write_seen, "selected": selected}
    signed = read("dedup.minhash").files() if cfg.dedup.near.enabled else []
    if signed:  # near copies of every row this run kept are found by later runs
        tables["minhash"] = lambda fs, folder: _copy_files(run.fs, signed, fs, folder)
        summary["minhash"] = minhash_settings(cfg)
    entry = h.commit("run", tables, summary, run_id=rid,
                     extra={"run_dir": run.url, "select_token": sel_entry.get("output_token")})
    if log is not None:
        log.print(f"[green]✔ history[/]: run {rid} recorded (commit {entry['seq']}, {len(ids)} selected, "
                  f"${summary['usd']:.4f})")
    return entry


def import_statuses(h: History, path: str, default_status: str | None = None) -> dict:
    """``selectllm history import FILE``: ids with a status (annotated | rejected) from an
    annotation tool's export (CSV with a header, or JSON lines), as one commit.  The ids become
    seen rows: no later run selects them again.  A bad line refuses the whole file, naming it."""
    import csv
    import io

    try:
        with fsspec.open(path, "rb", **storage_options(path)) as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"history import: cannot read {path}: {type(e).__name__}: {e}") from None
    records: list[tuple[int, dict]] = []
    if path.endswith((".jsonl", ".json", ".ndjson")):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise UserError(f"history import: {path} line {n}: not JSON") from None
            if not isinstance(rec, dict):
                raise UserError(f"history import: {path} line {n}: not an object")
            records.append((n, rec))
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise UserError(f"history import: {path}: a CSV with a header naming an 'id' column")
        records = [(n, rec) for n, rec in enumerate(reader, 2)]
    ids, statuses = [], []
    for n, rec in records:
        ident = rec.get("id")
        status = rec.get("status") or default_status
        if not isinstance(ident, str) or not ident.strip():
            raise UserError(f"history import: {path} line {n}: no id")
        if status not in STATUSES:
            raise UserError(f"history import: {path} line {n}: status {status!r} is not one of "
                            f"{', '.join(STATUSES)} (or pass --status)")
        ids.append(ident.strip())
        statuses.append(status)
    if not ids:
        raise UserError(f"history import: {path} holds no rows")
    table = pa.table({"id": ids, "status": statuses}, schema=STATUS)
    counts = {s: statuses.count(s) for s in STATUSES}
    return h.commit("import", {"status": table}, {"rows": len(ids), **counts}, extra={"source": path})


def seen_uris(h: History, commits: list[dict]) -> list[str]:
    """Where the ids a run must not keep are: every earlier run's seen rows, every import."""
    return h.folders([c for c in commits if c["kind"] == "run"], "seen") + \
        h.folders([c for c in commits if c["kind"] == "import"], "status")
