"""Embedding backends without Ray: config, plan, cache, and each backend's vectors against torch's."""

import threading

import numpy as np
import pytest

from selectllm.config import load_config
from selectllm.embed.backends import make_encoder, plan
from selectllm.embed.cache import build_once, model_files_key
from selectllm.embed.embedder import Embedder, resolve_model
from selectllm.errors import UserError
from selectllm.embed.stage import STAGE as EMBED


def _embed_settings(cfg) -> str:
    return EMBED.settings.hash(cfg)

TOPICS = ["cats", "dogs", "tax law", "python lists", "baking bread", "poems", "SQL joins", "rivers"]
TEXTS = [f"### Instruction: task number {i} about {w}\n\n### Response:" for i, w in enumerate(TOPICS * 3)]
LONG = "### Instruction: " + " ".join(f"word{i} of a very long instruction" for i in range(200))


def test_backend_key_is_validated_in_one_line():
    with pytest.raises(UserError, match=r"embed.backend: unknown backend 'onnxx' \(one of: auto, torch, onnx, static\)"):
        load_config(None, ["embed.backend=onnxx"])
    with pytest.raises(UserError, match="embed.threads"):
        load_config(None, ["embed.threads=0"])


def test_settings_hash_has_the_backend_not_the_speed_knobs():
    base = _embed_settings(load_config(None, []))
    for b in ("torch", "onnx", "static"):
        assert _embed_settings(load_config(None, [f"embed.backend={b}"])) != base
    for speed in ("embed.threads=3", "embed.batch_size=7", "embed.actors=2", "embed.cache_dir=/tmp/x"):
        assert _embed_settings(load_config(None, [speed])) == base
    assert _embed_settings(load_config(None, ["embed.static_dims=64"])) != base


def test_plan_per_backend_and_cluster():
    auto = load_config(None, [])
    assert plan(auto, 16, 2).backend == "torch" and plan(auto, 16, 2).gpus == 1.0 and plan(auto, 16, 2).actors == 2
    p = plan(auto, 8, 0)  # onnx and static: one single-threaded actor per core
    assert (p.backend, p.device, p.actors, p.threads, p.batch_size) == ("onnx", "cpu", 8, 1, 1)
    s = plan(load_config(None, ["embed.backend=static"]), 8, 4)  # static never takes a GPU
    assert (s.gpus, s.actors, s.threads) == (0.0, 8, 1)
    c = plan(load_config(None, ["embed.backend=torch", "embed.gpus_per_actor=0"]), 8, 0)
    assert (c.actors, c.threads) == (2, 4)  # torch on CPU: one actor per 4 cores
    t = plan(load_config(None, ["embed.backend=torch", "embed.threads=3", "embed.batch_size=5"]), 2, 0)
    assert (t.threads, t.batch_size, t.device) == (3, 5, "cpu")


def test_build_once_is_safe_when_builders_race(tmp_path):
    folder = tmp_path / "cache" / "thing-abc"
    start = threading.Barrier(4)
    built, got = [], []

    def build(tmp):
        built.append(tmp)
        (tmp / "data").write_text(f"from {tmp.name}")

    def worker():
        start.wait()
        got.append(build_once(folder, build))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert got == [folder] * 4 and (folder / "data").read_text().startswith("from .tmp-thing-abc")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["thing-abc"]  # no temp folder left
    n = len(built)
    build_once(folder, build)
    assert len(built) == n  # an existing folder is reused, never rebuilt


def test_model_key_follows_the_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("a")
    k = model_files_key(tmp_path, "x")
    (tmp_path / "README.md").write_text("b")  # docs do not change the vectors
    assert model_files_key(tmp_path, "x") == k
    assert model_files_key(tmp_path, "y") != k
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert model_files_key(tmp_path, "x") != k


@pytest.fixture(scope="module")
def torch_vectors():
    emb = Embedder(resolve_model("default"), 256, "cpu", "float32", 8, cpu_threads=2)
    return emb, emb.encode(TEXTS + [LONG])


def test_torch_overlapped_loop_matches_encode(torch_vectors):
    emb, ref = torch_vectors
    emb.overlap = True
    try:
        np.testing.assert_allclose(emb.encode(TEXTS + [LONG]), ref, atol=1e-5)
    finally:
        emb.overlap = False


def test_onnx_keeps_torch_vectors_and_max_seq_length(torch_vectors, tmp_path):
    _, ref = torch_vectors
    model = resolve_model("default")
    # fp32 export: the same function as sentence-transformers, truncation at 256 tokens included
    fp32 = make_encoder("onnx", model, max_seq_length=256, device="cpu", batch_size=4, threads=2,
                        onnx_int8=False, cache_dir=str(tmp_path)).encode(TEXTS + [LONG])
    assert ((fp32 * ref).sum(1) > 0.9999).all()
    int8 = make_encoder("onnx", model, max_seq_length=256, device="cpu", batch_size=1, threads=2).encode(TEXTS + [LONG])
    cos = (int8 * ref).sum(1)
    assert cos.min() > 0.95 and cos.mean() > 0.98
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)


def test_static_vectors_find_the_same_topic(torch_vectors):
    static = make_encoder("static", resolve_model("default"), max_seq_length=256, device="cpu", batch_size=64,
                          threads=1)
    x = static.encode(TEXTS)
    assert x.shape == (len(TEXTS), 256)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sims = x @ x.T
    np.fill_diagonal(sims, -2)
    nearest = sims.argmax(1)
    assert all(TEXTS[i].endswith(TEXTS[j].split("about ")[1]) for i, j in enumerate(nearest))
    np.testing.assert_array_equal(static.encode(TEXTS[:3]), x[:3])  # a row's vector ignores its batch


def test_static_tokenizes_a_long_window_in_bounded_chunks(monkeypatch):
    from selectllm.embed import static_backend

    static = make_encoder("static", resolve_model("default"), max_seq_length=256, device="cpu", batch_size=64,
                          threads=1)
    whole = static.encode(TEXTS)
    seen = []
    real = static._encode
    monkeypatch.setattr(static_backend, "ENCODE_ROWS", 5)
    monkeypatch.setattr(static, "_encode", lambda texts: seen.append(len(texts)) or real(texts))
    np.testing.assert_array_equal(static.encode(TEXTS), whole)
    assert seen == [5, 5, 5, 5, 4]  # 24 texts, never more than ENCODE_ROWS at once
