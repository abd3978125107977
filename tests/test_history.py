"""The programme's history (selectllm/history.py): commits, views, the lock, imports, and the
k-center kernels started from prior center vectors."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.cluster.kcenter import farthest_first, farthest_first_sequential
from selectllm.config import load_config
from selectllm.errors import UserError
from selectllm.history import INDEX, LOCK, VERSION, History, import_statuses, run_id_for, seen_uris
from selectllm.history import _pid_alive as _alive


def _seen(ids):
    return pa.table({"id": ids})


def test_commits_views_and_a_rerun_replacing_only_its_own(tmp_path):
    h = History(str(tmp_path / "h"))
    assert h.commits() == [] and h.view("w1") == []
    a = h.commit("run", {"seen": _seen(["a"])}, {"usd": 1.0}, run_id="w1")
    b = h.commit("run", {"seen": _seen(["b"])}, {"usd": 2.0}, run_id="w2")
    assert [c["seq"] for c in h.commits()] == [1, 2]
    # an unrecorded run sees everything; a recorded one what came before it
    assert [c["run_id"] for c in h.view("w3")] == ["w1", "w2"]
    assert [c["run_id"] for c in h.view("w2")] == ["w1"] and h.view("w1") == []
    token_w2 = History.token(h.view("w2"))
    # w1 recorded again (a rerun with --force): same place, new files, w2's entry untouched
    a2 = h.commit("run", {"seen": _seen(["a", "a2"])}, {"usd": 1.5}, run_id="w1")
    commits = h.commits()
    assert [(c["seq"], c["run_id"]) for c in commits] == [(1, "w1"), (2, "w2")]
    assert commits[1] == b and a2["token"] != a["token"]
    assert not (tmp_path / "h" / "runs" / "w1" / a["token"]).exists()  # the replaced files are gone
    assert History.token(h.view("w2")) != token_w2  # w2's view changed: its stages rerun
    assert h.read(h.view("w3"), "seen", pa.schema([("id", pa.string())])).column("id").to_pylist() == ["a", "a2", "b"]
    assert h.spent(h.view("w3")) == 3.5


def test_files_no_commit_names_are_never_read(tmp_path):
    h = History(str(tmp_path / "h"))
    h.commit("run", {"seen": _seen(["a"])}, {}, run_id="w1")
    stray = tmp_path / "h" / "runs" / "w2" / "deadbeef"  # a run killed before its index write
    stray.mkdir(parents=True)
    pq.write_table(_seen(["zzz"]), stray / "seen.parquet")
    assert [c["run_id"] for c in h.commits()] == ["w1"]
    assert all("w2" not in u for u in seen_uris(h, h.commits()))


def test_newer_format_refused_in_one_line(tmp_path):
    h = History(str(tmp_path / "h"))
    h.commit("run", {"seen": _seen(["a"])}, {}, run_id="w1")
    idx = json.loads((tmp_path / "h" / INDEX).read_text())
    idx["version"] = VERSION + 1
    (tmp_path / "h" / INDEX).write_text(json.dumps(idx))
    with pytest.raises(UserError, match=f"format version {VERSION + 1}; this selectllm reads versions up to {VERSION}"):
        History(str(tmp_path / "h")).commits()
    (tmp_path / "h" / INDEX).write_text("[1, 2]")
    with pytest.raises(UserError, match="not a selectllm history"):
        History(str(tmp_path / "h")).commits()


def test_second_holder_refused_dead_holder_taken_over(tmp_path):
    h = History(str(tmp_path / "h"))
    with h.lock("run week-1"):
        with pytest.raises(UserError, match=r"in use by run week-1 .*one run at a time"):
            h.lock("run week-2").acquire()
    assert not (tmp_path / "h" / LOCK).exists()  # released
    # a holder that died on this host (its pid is gone) does not block the next run
    dead = next(p for p in range(4_000_000, 3_000_000, -1) if not _alive(p))  # no such process
    info = {"owner": "run dead", "host": socket.gethostname(), "pid": dead, "nonce": "x", "heartbeat": time.time()}
    (tmp_path / "h" / LOCK).write_text(json.dumps(info))
    with h.lock("run week-2"):
        assert json.loads((tmp_path / "h" / LOCK).read_text())["owner"] == "run week-2"


def test_import_csv_and_jsonl(tmp_path):
    h = History(str(tmp_path / "h"))
    csv = tmp_path / "export.csv"
    csv.write_text("id,status,annotator\nid1,annotated,bob\nid2,rejected,amy\n")
    entry = import_statuses(h, str(csv))
    assert entry["summary"] == {"rows": 2, "annotated": 1, "rejected": 1}
    jl = tmp_path / "export.jsonl"
    jl.write_text('{"id": "id3"}\n\n{"id": "id4", "status": "rejected"}\n')
    assert import_statuses(h, str(jl), "annotated")["summary"] == {"rows": 2, "annotated": 1, "rejected": 1}
    table = h.read(h.commits(), "status", pa.schema([("id", pa.string()), ("status", pa.string())]))
    assert sorted(table.column("id").to_pylist()) == ["id1", "id2", "id3", "id4"]
    assert len(seen_uris(h, h.commits())) == 2  # imported ids are seen by every later run


@pytest.mark.parametrize("text,name,needle", [
    ("id,status\nid1,annotated\nid2,maybe\n", "x.csv", "x.csv line 3: status 'maybe'"),
    ("name\nid1\n", "x.csv", "header naming an 'id' column"),
    ('{"id": "a", "status": "annotated"}\nnot json\n', "x.jsonl", "x.jsonl line 2: not JSON"),
    ('{"status": "annotated"}\n', "x.jsonl", "line 1: no id"),
    ("", "x.jsonl", "holds no rows"),
])
def test_bad_import_refused_whole_with_one_line(tmp_path, text, name, needle):
    h = History(str(tmp_path / "h"))
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        import_statuses(h, str(tmp_path / name))
    assert h.commits() == []


def test_run_id_names_the_run_dir():
    a, b = run_id_for("/data/runs/week-01"), run_id_for("s3://b/runs/week-01")
    assert a.startswith("week-01-") and b.startswith("week-01-") and a != b


def test_config_history_short_and_long_forms(tmp_path):
    assert load_config(None, ["history=s3://b/prog"]).history.path == "s3://b/prog"
    cfg = load_config(None, ["history.path=/h", "history.max_usd=3"])
    assert (cfg.history.path, cfg.history.max_usd) == ("/h", 3.0)
    with pytest.raises(UserError, match="history.budget"):
        load_config(None, ["history.budget=3"])


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_farthest_first_from_prior_vectors_matches_the_textbook_loop():
    rng = np.random.default_rng(3)
    x, prior = _unit(rng, 500, 8), _unit(rng, 40, 8)
    got, dist = farthest_first(x, 12, prior=prior, batch=4)
    # oracle: the sequential loop over prior + x, whose first 40 centers are the prior rows
    both = np.concatenate([prior, x])
    want, _ = farthest_first_sequential(both, 52, initial=list(range(40)))
    assert list(got) == [int(i) - 40 for i in want[40:]]
    assert np.allclose(dist, np.maximum(1 - np.max(x @ np.concatenate([prior, x[got]]).T, axis=1), 0), atol=1e-5)


def test_prior_vectors_steer_centers_away_from_what_is_covered():
    rng = np.random.default_rng(0)
    x = _unit(rng, 400, 6)
    plain, _ = farthest_first(x, 10)
    prior = x[plain]  # last week selected exactly these
    again, _ = farthest_first(x, 10, prior=prior)
    assert not set(plain) & set(again)


def test_initial_centers_file_content_is_in_the_settings(tmp_path):
    from selectllm.pipeline import BY_NAME

    f = tmp_path / "centers.txt"
    f.write_text("a\nb\n")
    cfg = load_config(None, [f"cluster.initial_centers={f}"])
    before = BY_NAME["cluster"].settings.hash(cfg)
    f.write_text("a\nc\n")
    assert BY_NAME["cluster"].settings.hash(cfg) != before


def test_history_on_s3_commit_lock_and_refusal(s3_env):
    """The same store on object storage: the lock is a conditional PUT (one holder), commits and
    views as on a local disk."""
    url = f"s3://{s3_env.bucket()}/programme"
    h = History(url)
    with h.lock("run week-1"):
        with pytest.raises(UserError, match="in use by run week-1"):
            History(url).lock("run week-2").acquire()
        h.commit("run", {"seen": _seen(["a", "b"])}, {"usd": 0.5}, run_id="w1")
    h.commit("run", {"seen": _seen(["c"])}, {"usd": 0.25}, run_id="w2")
    h2 = History(url)
    assert [c["run_id"] for c in h2.view("w3")] == ["w1", "w2"] and h2.spent(h2.view("w3")) == 0.75
    ids = h2.read(h2.view("w3"), "seen", pa.schema([("id", pa.string())])).column("id").to_pylist()
    assert ids == ["a", "b", "c"]
    assert all(u.startswith("s3://") for u in seen_uris(h2, h2.view("w3")))
    with h2.lock("run week-3"):  # released by week-1: free again
        pass


def test_programme_cap_leaves_what_earlier_runs_did_not_spend(tmp_path):
    from types import SimpleNamespace

    from selectllm.console import console
    from selectllm.rundir import RunDir
    from selectllm.select.send import _programme_capped

    hist = str(tmp_path / "h")
    h = History(hist)
    h.commit("run", {"seen": _seen(["a"])}, {"usd": 3.0}, run_id="w1")
    run = RunDir(str(tmp_path / "week-2"))
    ctx = SimpleNamespace(cfg=load_config(None, [f"history.path={hist}", "history.max_usd=4", "llm.max_usd=5"]),
                          run=run, log=console)
    assert _programme_capped(ctx).llm.max_usd == pytest.approx(1.0)
    ctx.cfg = load_config(None, [f"history.path={hist}", "history.max_usd=10", "llm.max_usd=5"])
    assert _programme_capped(ctx).llm.max_usd == 5.0  # the run's own cap is the smaller one
    ctx.cfg = load_config(None, [f"history.path={hist}", "history.max_usd=3", "llm.max_usd=5"])
    with pytest.raises(UserError, match=r"history.max_usd=3.0 is spent \(\$3.0000 by 1 earlier runs\)"):
        _programme_capped(ctx)


def test_annotated_rows_without_vectors_are_counted_not_steering(tmp_path):
    """Annotated ids an earlier run selected steer the clusters (their vectors are in the history);
    ids imported alone have no vector: counted as not steering, in the cluster stage's counts and
    the report's history section."""
    from types import SimpleNamespace

    from selectllm.cluster.stage import prior_centers
    from selectllm.console import console
    from selectllm.history import selected_schema
    from selectllm.report.history_section import section
    from selectllm.rundir import RunDir

    hist = str(tmp_path / "h")
    h = History(hist)
    vec = pa.FixedSizeListArray.from_arrays(pa.array([1, 0, 0, 1], pa.float32()), 2)
    sel = pa.table({"id": ["s1", "s2"], "instruction": ["a", "b"], "input": ["", ""], "cluster_id": [0, 1],
                    "embedding": vec, "run_id": ["w1", "w1"]}, schema=selected_schema(2))
    h.commit("run", {"seen": _seen(["s1", "s2", "x"]), "selected": sel}, {"usd": 0.0, "dim": 2, "selected": 2},
             run_id="w1")
    export = tmp_path / "export.csv"
    export.write_text("id,status\ns1,annotated\nnew1,annotated\nnew2,annotated\ns2,rejected\n")
    import_statuses(h, str(export))
    want = {"annotated": 3, "annotated_steering": 1, "annotated_not_steering": 2}
    assert h.annotated(h.commits()) == want
    ctx = SimpleNamespace(cfg=load_config(None, [f"history.path={hist}"]), run=RunDir(str(tmp_path / "week-2")),
                          log=console)
    prior, counts = prior_centers(ctx, 2)
    assert len(prior) == 2 and counts == want  # the cluster stage's counts (manifest)
    html, metrics = section(ctx, lambda x: str(x), lambda *a, **k: "<table></table>")
    assert "2 not steering clusters" in html and metrics["annotated_not_steering"] == 2


def test_quotas_share_the_budget_by_rows_not_yet_covered():
    from selectllm.select.plan import allocate_quotas

    sizes, covered = np.array([10, 10, 10]), np.array([10, 0, 5])
    assert allocate_quotas(sizes, 6, 1, "sqrt").tolist() == [2, 2, 2]
    assert allocate_quotas(sizes, 6, 1, "sqrt", covered=covered).tolist() == [0, 4, 2]
    # more budget than uncovered rows: every uncovered row, the rest shared by the covered ones
    q = allocate_quotas(sizes, 20, 1, "sqrt", covered=covered)
    assert q.tolist() == [3, 10, 7] and q.sum() == 20
    assert allocate_quotas(sizes, 40, 1, "equal", covered=covered).tolist() == [10, 10, 10]
    assert allocate_quotas(sizes, 2, 1, "equal", covered=covered).tolist() == [0, 1, 1]


def test_covered_rows_are_within_the_covering_radius_of_an_earlier_pick():
    """The cluster stage's ``covered`` counts, on in-process shards: rows no farther from an
    earlier selection than the covering radius (earlier selections counted as centers)."""
    from selectllm.cluster.sharded import ShardGroup, covered_counts, run_kcenter, synthetic_rows

    n, d = 600, 8
    _, x = synthetic_rows(n, d, 5, 0, n)
    prior = x[:40]  # last week picked these very rows
    srcs = [("synthetic", dict(n=n, d=d, seed=5, start=a, stop=b)) for a, b in ((0, 300), (300, n))]
    group = ShardGroup.start(srcs, remote=False)
    res = run_kcenter(group, 10, prior=prior)
    covered, radius = covered_counts(group, prior, 10)
    prior_d = np.maximum(1 - (x @ prior.T).max(axis=1), 0)
    center_d = np.concatenate([s.dist for s in group.shards])
    assert radius == pytest.approx(float(np.minimum(prior_d, center_d).max()), abs=1e-5)
    assert covered.sum() == int((prior_d <= radius + 1e-6).sum()) and 40 <= covered.sum() < n
    assert (covered <= res.sizes).all()
    assert covered_counts(group, None, 10)[0].tolist() == [0] * 10
