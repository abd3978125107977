"""``embed.backend: onnx``: the model's transformer exported to ONNX once, int8, run by onnxruntime.

Export (once per model and options, cached, see cache.py): the sentence-transformers model is
loaded with torch, its Hugging Face transformer and its pooling are wrapped in one module and
exported with ``torch.onnx.export`` (dynamic batch and sequence axes), then the MatMul weights are
quantized to int8 with ``onnxruntime.quantization.quantize_dynamic`` (activations are quantized on
the fly; the AVX-512 VNNI / AVX2 int8 kernels do the work).  The folder also holds the model's
fast tokenizer (``tokenizer.json``) and ``meta.json``: max_seq_length, pooling, lower-casing.

Inference (in each Ray actor): the HF ``tokenizers`` tokenizer, truncated at the model's
max_seq_length as sentence-transformers does, rows sorted by token count and cut into batches
padded to their own longest row, one ``InferenceSession`` with ``threads`` intra-op threads, then
L2 normalization in float32.  Pooling is the model's own: mean, cls, max or mean_sqrt_len.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from selectllm.embed.cache import build_once, cache_root, local_model_dir, model_files_key
from selectllm.errors import UserError

FORMAT = "onnx-v1"
OPSET = 17
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len_tokens")


def describe(st_model) -> dict:
    """max_seq_length, pooling, lower-casing and dimension of a loaded SentenceTransformer.

    Only Transformer -> Pooling [-> Normalize] models can be run outside torch; anything else
    (a Dense layer, a router, another modality) is a one-line error naming the torch backend.
    """
    kinds = [type(m).__name__ for m in st_model]
    if not kinds or kinds[0] != "Transformer" or len(kinds) < 2 or kinds[1] != "Pooling" \
            or any(k != "Normalize" for k in kinds[2:]):
        raise UserError(f"embedding model modules {kinds} are not Transformer -> Pooling [-> Normalize]; "
                        "use embed.backend: torch for this model")
    pooling_cfg = st_model[1].get_config_dict()
    mode = pooling_cfg.get("pooling_mode")
    if mode is None:  # older configs: one boolean per mode
        on = [k[len("pooling_mode_"):] for k, v in pooling_cfg.items() if k.startswith("pooling_mode_") and v is True]
        mode = on[0] if len(on) == 1 else ",".join(on)
    mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
    if mode not in POOLINGS:
        raise UserError(f"embedding model pooling '{mode}' is not supported by the onnx/static backends "
                        f"({', '.join(POOLINGS)}); use embed.backend: torch")
    return {"pooling": mode, "max_seq_length": int(st_model.max_seq_length or 512),
            "do_lower_case": bool(getattr(st_model[0], "do_lower_case", False)),
            "dim": int(st_model[0].get_embedding_dimension() if hasattr(st_model[0], "get_embedding_dimension")
                       else st_model[0].get_word_embedding_dimension())}


def load_st(model_dir: Path):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


def _pool(hidden, mask, mode: str):
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return torch.where(m > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values
    summed = (hidden * m).sum(dim=1)
    count = m.sum(dim=1).clamp(min=1e-9)
    return summed / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)


def export(model_dir: Path, out: Path, int8: bool) -> None:
    """Write model.onnx, tokenizer.json and meta.json for ``model_dir`` into ``out``."""
    import torch

    st = load_st(model_dir)
    meta = describe(st)
    hf = st[0].auto_model.eval()
    tok = st.tokenizer
    if not getattr(tok, "is_fast", False):
        raise UserError(f"embedding model {model_dir} has no fast tokenizer (tokenizer.json); use embed.backend: torch")
    inputs = ["input_ids", "attention_mask"]
    takes_types = "token_type_ids" in tok.model_input_names

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.hf(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            return _pool(hidden, attention_mask, meta["pooling"])

    if takes_types:
        inputs.append("token_type_ids")
    sample = tok(["a short example", "a somewhat longer example sentence for the export"], padding=True,
                 return_tensors="pt")
    args = tuple(sample[k] for k in inputs)
    fp32 = out / "model-fp32.onnx"
    with torch.inference_mode():
        torch.onnx.export(Wrapped().eval(), args, str(fp32), input_names=inputs, output_names=["embedding"],
                          dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in inputs}, "embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
        fp32.unlink()
    else:
        fp32.rename(out / "model.onnx")
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    meta.update({"inputs": inputs, "int8": int8, "pad_id": int(tok.pad_token_id or 0), "format": FORMAT,
                 "source": str(model_dir)})
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def artifact_key(model: str, int8: bool) -> str:
    return model_files_key(local_model_dir(model), FORMAT, OPSET, int8)


def ensure_export(model: str, int8: bool, cache_dir: str | None, key: str | None = None) -> Path:
    """The cached export folder for ``model``, built now if missing (safe under concurrent actors)."""
    model_dir = local_model_dir(model)
    key = key or model_files_key(model_dir, FORMAT, OPSET, int8)
    return build_once(cache_root(cache_dir) / f"onnx-{key}", lambda tmp: export(model_dir, tmp, int8))


def load_tokenizer(folder: Path, max_len: int | None):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    if max_len:
        tok.enable_truncation(max_length=max_len)
    else:
        tok.no_truncation()
    return tok


class OnnxEncoder:
    def __init__(self, folder: Path, threads: int, batch_size: int, max_seq_length: int):
        import onnxruntime as ort

        self.meta = json.loads((folder / "meta.json").read_text())
        # never longer than the model was trained for; shorter if the config asks
        self.max_len = min(max_seq_length, self.meta["max_seq_length"])
        self.tok = load_tokenizer(folder, self.max_len)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size
        self.dim = self.meta["dim"]

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.meta["do_lower_case"]:
            texts = [t.lower() for t in texts]
        encs = self.tok.encode_batch_fast(texts)
        ids = [e.ids for e in encs]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")  # length bucketing: batches of similar lengths
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pad = self.meta["pad_id"]
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = int(lengths[rows].max())
            input_ids = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                n = lengths[r]
                input_ids[j, :n] = ids[r]
                mask[j, :n] = 1
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if "token_type_ids" in self.meta["inputs"]:
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            out[rows] = self.session.run(None, feeds)[0]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
