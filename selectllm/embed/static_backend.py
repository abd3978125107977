"""``embed.backend: static``: a model2vec-style static model distilled offline from a local model.

Distillation (once per model and options, cached, see cache.py), as model2vec's ``distill`` does:
every vocabulary token goes through the sentence-transformers model as the 3-token sequence
``[SEP] token [CLS]`` (model2vec's reversed order), and the token's vector is the mean of the three
output states; ``[unusedN]`` tokens are dropped; PCA (scikit-learn) to ``static_dims``
dimensions; then SIF weighting with token probabilities estimated by Zipf's law from the
vocabulary's order, ``w = 1e-4 / (1e-4 + p)``.  The ``model2vec[distill]`` package itself pins
transformers < 5.4 and would downgrade our transformers, tokenizers and huggingface-hub, so the
few steps above are done here with torch, numpy and scikit-learn.

Inference: the model's fast tokenizer without special tokens, truncated at max_seq_length, each
row's vector the mean of its tokens' vectors (a sparse count matrix times the table), then L2
normalization.  No torch in the actors.
"""

from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path

import numpy as np

from selectllm.embed.cache import build_once, cache_root, local_model_dir, model_files_key
from selectllm.embed.onnx_backend import describe, load_st, load_tokenizer
from selectllm.errors import UserError

FORMAT = "static-v1"
SIF = 1e-4
UNUSED = re.compile(r"\[unused\d+\]")
DISTILL_BATCH = 1024
ENCODE_ROWS = 4096  # texts tokenized at once


def token_vectors(st) -> np.ndarray:
    """(vocab, hidden) output vectors of every token id, each as ``[SEP] id [CLS]``, mean of 3 states."""
    import torch

    tok = st.tokenizer
    hf = st[0].auto_model.eval()
    probe = tok("A")["input_ids"]  # the model's own begin / end tokens
    bos, eos = probe[0], probe[-1]
    vocab = len(tok.get_vocab())
    ids = torch.arange(vocab)
    seqs = torch.stack([torch.full_like(ids, eos), ids, torch.full_like(ids, bos)], dim=1)
    takes_types = "token_type_ids" in tok.model_input_names
    out = []
    with torch.inference_mode():
        for start in range(0, vocab, DISTILL_BATCH):
            batch = seqs[start:start + DISTILL_BATCH]
            kw = {"token_type_ids": torch.zeros_like(batch)} if takes_types else {}
            hidden = hf(input_ids=batch, attention_mask=torch.ones_like(batch), **kw).last_hidden_state
            out.append(hidden.float().mean(dim=1).numpy())
    return np.concatenate(out)


def distill(model_dir: Path, out: Path, dims: int) -> None:
    """Write vectors.npy (vocab x dims float32), tokenizer.json and meta.json into ``out``."""
    from sklearn.decomposition import PCA

    st = load_st(model_dir)
    meta = describe(st)
    tok = st.tokenizer
    if not getattr(tok, "is_fast", False):
        raise UserError(f"embedding model {model_dir} has no fast tokenizer (tokenizer.json); use embed.backend: torch")
    vectors = token_vectors(st)
    names = tok.convert_ids_to_tokens(list(range(len(vectors))))
    keep = np.array([not UNUSED.fullmatch(t or "") for t in names])
    kept = vectors[keep].astype(np.float64)
    dims = min(dims, kept.shape[1])
    reduced = PCA(n_components=dims, svd_solver="full", random_state=0).fit_transform(kept)
    # Zipf: the vocabulary's order stands in for frequency rank; SIF down-weights frequent tokens
    inv_rank = 1.0 / np.arange(2, len(reduced) + 2)
    reduced *= (SIF / (SIF + inv_rank / inv_rank.sum()))[:, None]
    table = np.zeros((len(vectors), dims), dtype=np.float32)  # dropped tokens: zero rows, never produced
    table[keep] = reduced
    np.save(out / "vectors.npy", table)
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    meta.update({"dim": dims, "unk_id": int(tok.unk_token_id if tok.unk_token_id is not None else 0),
                 "format": FORMAT, "source": str(model_dir), "sif": SIF,
                 "dropped_tokens": int((~keep).sum())})
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def artifact_key(model: str, dims: int) -> str:
    return model_files_key(local_model_dir(model), FORMAT, dims, SIF)


def ensure_distilled(model: str, dims: int, cache_dir: str | None, key: str | None = None) -> Path:
    model_dir = local_model_dir(model)
    key = key or model_files_key(model_dir, FORMAT, dims, SIF)
    return build_once(cache_root(cache_dir) / f"static-{key}", lambda tmp: distill(model_dir, tmp, dims))


class StaticEncoder:
    def __init__(self, folder: Path, max_seq_length: int):
        from tokenizers import Tokenizer

        self.meta = json.loads((folder / "meta.json").read_text())
        self.table = np.load(folder / "vectors.npy")
        self.tok: Tokenizer = load_tokenizer(folder, max_seq_length)
        self.max_len = max_seq_length
        self.dim = self.table.shape[1]
        self.unk = [self.meta["unk_id"]]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of ``texts``, tokenized ENCODE_ROWS at a time: the tokenizer's per-token
        objects of a whole window (up to a unit) would make an actor's memory follow the unit."""
        if len(texts) <= ENCODE_ROWS:
            return self._encode(texts)
        return np.concatenate([self._encode(texts[i:i + ENCODE_ROWS]) for i in range(0, len(texts), ENCODE_ROWS)])

    def _encode(self, texts: list[str]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        if self.meta["do_lower_case"]:
            texts = [t.lower() for t in texts]
        encs = self.tok.encode_batch_fast(texts, add_special_tokens=False)
        ids = [e.ids or self.unk for e in encs]  # a row with no token: the unknown token
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), out=indptr[1:])
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(indptr[-1]))
        counts = csr_matrix((np.ones(len(flat), dtype=np.float32), flat, indptr),
                            shape=(len(ids), len(self.table)))
        out = np.asarray(counts @ self.table, dtype=np.float32)  # sum of token vectors; mean after norm
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
        return out / np.maximum(norms, 1e-12)
