"""``evaluate/evaluate.html``: the fine-tune evaluation on one self-contained page.

Like ``report.html`` (inline CSS, an inline base64 PNG, nothing external).  The plot
(``<img id="plot-evaluate">``) has one panel per metric: a bar per strategy at its mean over the
seeds, the standard deviation as an error bar, each seed as a dot, and the untuned model as a
dashed line.
"""

from __future__ import annotations

import numpy as np

from selectllm.evaluate.figures import BASE, METRICS, format_stat, verdict
from selectllm.report import plots as P
from selectllm.report.html import CSS, esc, img, table, trunc

COLORS = {"selectllm": "#d62728", "random": "#7f7f7f", "kcenter": "#1f77b4", "kmeans-closest": "#2ca02c",
          "selectllm-paper": "#ff7f0e", "length": "#8c564b", "alpagasus": "#9467bd"}


def metrics_plot(doc: dict) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in doc["strategies"] if n != BASE]
    base = doc["strategies"].get(BASE)
    fig = Figure(figsize=(3.3 * len(METRICS), 3.4), dpi=P.DPI)
    FigureCanvasAgg(fig)
    for i, (key, label, better) in enumerate(METRICS, 1):
        ax = fig.add_subplot(1, len(METRICS), i)
        means = [doc["strategies"][n][key]["mean"] for n in names]
        stds = [doc["strategies"][n][key]["std"] or 0.0 for n in names]
        pos = np.arange(len(names))
        ok = [m is not None for m in means]
        ax.bar(pos[ok], [m for m in means if m is not None], yerr=[s for s, o in zip(stds, ok) if o], capsize=4,
               color=[COLORS.get(n, P.BAR_COLOR) for n, o in zip(names, ok) if o], alpha=0.75)
        for j, n in enumerate(names):
            ys = [c.get(key) for c in doc["strategies"][n]["seeds"] if c.get(key) is not None]
            ax.scatter([j] * len(ys), ys, color="black", s=10, zorder=3)
        if base and base[key]["mean"] is not None:
            ax.axhline(base[key]["mean"], color="black", linestyle="--", linewidth=1, label="no fine-tune")
            ax.legend(fontsize=7, loc="best")
        vals = [v for v in means if v is not None] + ([base[key]["mean"]] if base and base[key]["mean"] is not None else [])
        if vals:  # bars of nearly equal height: show the differences, not the zero
            lo, hi = min(vals) - max(stds + [0]) * 2, max(vals) + max(stds + [0]) * 2
            pad = (hi - lo) * 0.15 or abs(hi) * 0.05 or 0.01
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticks(pos, names, rotation=20, fontsize=8)
        ax.set_title(f"{label} ({better} is better)", fontsize=9)
    return P._encode(fig)


def build_page(doc: dict, url: str = "") -> str:
    s = doc["settings"]
    cap = f", at most {s['max_steps']} steps" if s.get("max_steps") else ""
    parts = [f"<h1>SelectLLM evaluate{(' – ' + esc(url)) if url else ''}</h1>",
             f"<p>Model {esc(s['model'])} fine-tuned with LoRA (r = {s['lora_r']}) on each strategy's picks "
             f"({esc(s['epochs'])} epoch(s){cap}, "
             f"batches of {s['batch_size']}, lr {s['lr']}, {s['max_length']} tokens) on {esc(s['device'])}; "
             f"seeds {esc(', '.join(map(str, s['seeds'])))}. Scored on {s['test_rows']:,} held-out rows of "
             f"{esc(s['test_path'])}: loss per reference-response token (lower is better); ROUGE-L F1 and "
             f"MiniLM cosine of greedy answers (≤ {s['max_new_tokens']} tokens) to the references on the first "
             f"{s['generate_rows']:,} (higher is better). Mean ± standard deviation over the seeds; "
             f"“beyond the spread”: the means differ by more than the two standard deviations together.</p>"]
    rows = []
    for name, row in doc["strategies"].items():
        rows.append([name, row.get("train_rows", "–"), *[format_stat(row[k]) for k, _, _ in METRICS],
                     verdict(row) or "–"])
    parts.append(table(["strategy", "training rows", *[f"{label} ({b})" for _, label, b in METRICS], "vs random"],
                       rows, numeric={1}))
    parts.append(img("plot-evaluate", "Held-out loss, ROUGE-L and cosine per strategy (mean, sd, seeds)",
                     metrics_plot(doc)))
    parts.append("<h2>Answers of the first seed, first test rows</h2>")
    for name, row in doc["strategies"].items():
        ex = (row["seeds"][0] or {}).get("examples") or []
        if ex:
            parts.append(f"<h3>{esc(name)}</h3>")
            parts.append(table(["instruction", "reference", "answer"],
                               [[trunc(e["instruction"]), trunc(e["reference"]), trunc(e["answer"])] for e in ex]))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>SelectLLM evaluate</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_page(ctx, path: str, doc: dict) -> None:
    with ctx.run.fs.open(path, "wb") as f:
        f.write(build_page(doc, ctx.run.url).encode("utf-8"))
