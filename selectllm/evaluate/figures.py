"""The figures of ``selectllm evaluate``: each metric summarized over the seeds, the comparison with
``random``, and their text form (the terminal table and the page share it)."""

from __future__ import annotations

import math

import numpy as np

METRICS = (("test_loss", "held-out loss", "lower"), ("rouge_l", "ROUGE-L", "higher"),
           ("cosine", "MiniLM cosine", "higher"))
BASE = "base"  # the row of the model without fine-tuning


def summarize(values: list[float]) -> dict:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if not a.size:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def aggregate(ev, done: dict, counts: dict, picks: dict) -> dict:
    """evaluate.json: per strategy, each seed's cell, the summary of each metric and, against
    ``random`` when it ran, the difference of the means and whether it exceeds the spread (the sum
    of the two standard deviations: the mean ± 1 sd bands do not overlap)."""
    out: dict = {}
    if ev.base and (BASE, None) in done:
        cell = done[(BASE, None)]
        out[BASE] = {"seeds": [cell], **{key: summarize([cell.get(key)]) for key, _, _ in METRICS}}
    for name in ev.strategies:
        cells = [done[(name, s)] for s in ev.seeds]
        out[name] = {"seeds": cells, **{key: summarize([c.get(key) for c in cells]) for key, _, _ in METRICS},
                     **counts[name], "train_rows": len(picks[name])}
    if "random" in ev.strategies:
        ref = out["random"]
        for name in ev.strategies:
            if name == "random":
                continue
            vs = {}
            for key, _, better in METRICS:
                a, b = out[name][key], ref[key]
                if a["mean"] is None or b["mean"] is None:
                    continue
                diff = a["mean"] - b["mean"]
                improves = diff < 0 if better == "lower" else diff > 0
                vs[key] = {"diff": diff, "better": bool(improves and diff != 0),
                           "beyond_spread": bool(abs(diff) > a["std"] + b["std"])}
            out[name]["vs_random"] = vs
    return out


def format_stat(s: dict) -> str:
    if s.get("mean") is None:
        return "–"
    return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["n"] > 1 else f"{s['mean']:.4f}"


def verdict(row: dict) -> str:
    vs = row.get("vs_random")
    if not vs:
        return ""
    words = []
    for key, label, _ in METRICS:
        if key in vs:
            v = vs[key]
            words.append(f"{label}: {'better' if v['better'] else 'worse'}"
                         f"{' beyond the spread' if v['beyond_spread'] else ' within the spread'}")
    return "; ".join(words)
