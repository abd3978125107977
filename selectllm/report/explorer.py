"""The selection explorer of ``report.html``: every LLM group with its candidates, for curators.

What it shows: each group of the select stage's ``decisions`` (its cluster, status, the reason it
fell back, every candidate's instruction and input with the chosen ones highlighted, and per
chosen row who chose it and why when the select stage recorded that: ``chosen_by`` /
``chosen_reasons`` columns of the decisions, ``status`` / ``reason`` / ``source_row`` of
``selected.jsonl``, each read when present).  For an LLM-free strategy (no decisions) it shows the
selected rows, grouped by cluster.  Filters: cluster, source file, status; a text search; a 2-D
map (inline SVG) whose cluster markers and selected points link to ``#cluster-N``, which filters
the list to that cluster.

How it stays bounded on big runs: at most :data:`MAX_GROUPS` groups and :data:`MAX_TEXT_CHARS`
characters of text are embedded (the groups that did not end ``ok`` first, then the others by
group id; the page says how many of how many), each text field cut at :data:`FIELD_MAX_CHARS`.
Only the candidates' ids are looked up in the dedup rows (a filtered scan, never the whole pool in
memory).  The data is one inline JSON blob (every ``<`` escaped, so no text can close the script)
read by a plain script that builds the list with ``textContent`` only: no text becomes markup.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_GROUPS = 2_000
MAX_TEXT_CHARS = 2_000_000  # instruction + input characters embedded in the page, all groups together
FIELD_MAX_CHARS = 1_500  # one instruction or input; the rest is counted, not embedded
SHOW_CHARS = 280  # shown before "more"
PAGE_GROUPS = 50  # groups rendered at once ("show more" renders the next ones)
MAP_MAX_POOL_POINTS = 4_000
MAP_MAX_SELECTED_POINTS = 2_000
MAP_MAX_CLUSTERS = 2_000  # cluster markers: the largest clusters
MAP_SIZE = (760, 470)
MAP_PAD = 14


@dataclass
class Explorer:
    """What the page embeds: groups, the rows they name, and how much was left out."""

    groups: list[dict] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)
    total_groups: int = 0
    llm: bool = True  # groups are LLM decisions (False: the selected rows of an LLM-free strategy)
    strategy: str = ""

    @property
    def capped(self) -> bool:
        return len(self.groups) < self.total_groups

    def data(self) -> dict:
        """The JSON the page embeds: rows as a list (each id written once), groups naming rows by index."""
        index = {ident: k for k, ident in enumerate(self.rows)}
        groups = [{**g, "cand": [index[i] for i in g["cand"]], "chosen": [index[i] for i in g["chosen"] if i in index]}
                  for g in self.groups]
        return {"groups": groups, "rows": [{"id": ident, **r} for ident, r in self.rows.items()],
                "total_groups": self.total_groups, "llm": self.llm, "strategy": self.strategy,
                "page": PAGE_GROUPS, "show": SHOW_CHARS}


# ----------------------------------------------------------------------------- reading
def _cut(text: Any) -> tuple[str, int]:
    s = "" if text is None else str(text)
    return (s, 0) if len(s) <= FIELD_MAX_CHARS else (s[:FIELD_MAX_CHARS], len(s) - FIELD_MAX_CHARS)


def _row(r: dict) -> dict:
    instr, icut = _cut(r.get("instruction"))
    inp, xcut = _cut(r.get("input"))
    out: dict[str, Any] = {"i": instr, "x": inp, "src": r.get("source") or ""}
    if icut:
        out["ic"] = icut
    if xcut:
        out["xc"] = xcut
    if r.get("source_row") is not None:
        out["r"] = int(r["source_row"])
    for key, short in (("status", "st"), ("reason", "why")):
        if r.get(key):
            out[short] = str(r[key])
    return out


def _lookup(rows_input, ids: list[str]) -> dict[str, dict]:
    """The dedup rows of these ids only (the select stage's filtered lookup, in this process)."""
    from selectllm.select.tables import lookup_rows

    if rows_input is None or not ids:
        return {}
    names = set(rows_input.dataset().schema.names)
    return lookup_rows(rows_input, ids, [c for c in ("instruction", "input", "source", "source_row") if c in names],
                       tasks=None)


def _pick_groups(ids: np.ndarray, status: list[str]) -> np.ndarray:
    """Which group ids to embed: all when they fit; else the ones that did not end ``ok`` (up to
    half the cap, by group id), then the others by group id."""
    order = np.argsort(ids, kind="stable")
    if len(ids) <= MAX_GROUPS:
        return ids[order]
    not_ok = np.asarray([s != "ok" for s in status], bool)[order]
    first = ids[order][not_ok][: MAX_GROUPS // 2]
    rest = ids[order][~not_ok][: MAX_GROUPS - len(first)]
    return np.sort(np.concatenate([first, rest]))


def _list_column(d: dict, key: str, n: int) -> list[str]:
    """A per-chosen-id list column (``chosen_by``, ``chosen_reasons``) when present and aligned."""
    v = d.get(key)
    return [("" if x is None else str(x)) for x in v] if isinstance(v, list) and len(v) == n else []


def collect(decisions, rows_input, selected: list[dict] | None, strategy: str) -> Explorer | None:
    """The explorer's data from the decisions input, the dedup rows input and selected.jsonl."""
    sel_by_id = {str(r.get("id")): r for r in selected or []}
    ex = Explorer(strategy=strategy)
    raw: list[dict] = []
    if decisions is not None and decisions.num_rows() > 0:
        head = decisions.read(columns=["group_id", "status"])
        gids = head.column("group_id").to_numpy(zero_copy_only=False)
        ex.total_groups = len(gids)
        picked = _pick_groups(gids, head.column("status").to_pylist())
        names = set(decisions.dataset().schema.names)
        columns = [c for c in ("group_id", "cluster_id", "candidate_ids", "chosen_ids", "status", "reason",
                               "chosen_by", "chosen_reasons") if c in names]
        table = decisions.read(columns=columns, filter=pc.field("group_id").isin(pa.array(picked, pa.int64())))
        raw = sorted(table.to_pylist(), key=lambda d: d["group_id"])
    elif selected:
        ex.llm = False
        by_cluster: dict[int, list[str]] = {}
        for r in selected:
            c = r.get("cluster_id")
            by_cluster.setdefault(-1 if c is None else int(c), []).append(str(r.get("id")))
        ex.total_groups = len(by_cluster)
        for c in sorted(by_cluster)[:MAX_GROUPS]:
            members = by_cluster[c]
            st = {sel_by_id[i].get("status") for i in members} - {None}
            raw.append({"group_id": None, "cluster_id": None if c < 0 else c, "candidate_ids": members,
                        "chosen_ids": members, "status": st.pop() if len(st) == 1 else ("mixed" if st else "selected"),
                        "reason": ""})
    else:
        return None

    found = _lookup(rows_input, [str(i) for d in raw for i in (d.get("candidate_ids") or [])])
    for i, r in sel_by_id.items():  # selected.jsonl's columns (text, status, reason) over the dedup row's
        found[i] = {**found.get(i, {}), **{k: v for k, v in r.items() if v is not None}}
    chars = 0
    for d in raw:
        cand = [str(i) for i in d.get("candidate_ids") or []]
        chosen = [str(i) for i in d.get("chosen_ids") or []]
        size = 0
        for i in cand:
            r = found.get(i)
            if r is not None and i not in ex.rows:
                size += min(len(str(r.get("instruction") or "")), FIELD_MAX_CHARS)
                size += min(len(str(r.get("input") or "")), FIELD_MAX_CHARS)
        if ex.groups and chars + size > MAX_TEXT_CHARS:
            break
        chars += size
        for i in cand:
            r = found.get(i)
            if i not in ex.rows:
                ex.rows[i] = _row(r) if r is not None else {"i": "", "x": "", "src": "", "missing": 1}
        g: dict[str, Any] = {"g": d.get("group_id"), "c": d.get("cluster_id"), "st": d.get("status") or "",
                             "why": d.get("reason") or "", "cand": cand, "chosen": chosen}
        by = _list_column(d, "chosen_by", len(chosen))
        if by:
            g["by"] = by
        reasons = _list_column(d, "chosen_reasons", len(chosen))
        if any(reasons):
            g["cw"] = reasons
        ex.groups.append(g)
    return ex


# ----------------------------------------------------------------------------- the map
def _scale(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return lo, span


def map_svg(pool_xy: np.ndarray, sel_xy: np.ndarray, sel_cluster: list, sel_label: list[str],
            center_xy: np.ndarray, center_cluster: list, center_size: list[int], center_selected: list[int]) -> str:
    """An inline SVG: pool sample (grey, one path), cluster markers (rings, sized by cluster size)
    and selected rows (red); markers and selected rows link to ``#cluster-N``."""
    w, h = MAP_SIZE
    every = [a for a in (pool_xy, sel_xy, center_xy) if len(a)]
    if not every:
        return ""
    lo, span = _scale(np.concatenate(every))

    def xy(p: np.ndarray) -> np.ndarray:
        q = (p - lo) / span
        return np.stack([MAP_PAD + q[:, 0] * (w - 2 * MAP_PAD), h - MAP_PAD - q[:, 1] * (h - 2 * MAP_PAD)], axis=1)

    out = [f'<svg id="explorer-map" class="map" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="2-D PCA map: grey pool rows, rings = clusters, red = selected rows; click one to list its cluster">']
    out.append(f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fbfcfd" stroke="#ddd"/>')
    if len(pool_xy):
        d = "".join(f"M{x:.1f} {y:.1f}h0" for x, y in xy(pool_xy))
        out.append(f'<path class="pool" d="{d}"/>')
    if len(center_xy):
        biggest = max(center_size) or 1
        order = np.argsort(-np.asarray(center_size), kind="stable")  # small rings drawn last, on top
        pts = xy(center_xy)
        for i in order:
            c = center_cluster[i]
            r = 4 + 10 * np.sqrt(center_size[i] / biggest)
            title = f"cluster {c}: {center_size[i]:,} rows, {center_selected[i]:,} selected"
            out.append(f'<a href="#cluster-{c}" class="cl" data-cluster="{c}"><circle cx="{pts[i, 0]:.1f}" '
                       f'cy="{pts[i, 1]:.1f}" r="{r:.1f}"><title>{html.escape(title)}</title></circle></a>')
    if len(sel_xy):
        pts = xy(sel_xy)
        for (x, y), c, label in zip(pts, sel_cluster, sel_label):
            if c is None:
                continue
            out.append(f'<a href="#cluster-{int(c)}" class="sel" data-cluster="{int(c)}"><circle cx="{x:.1f}" '
                       f'cy="{y:.1f}" r="3.2"><title>{html.escape(label)}</title></circle></a>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- the page section
CSS = """
#ex .bar{display:flex;flex-wrap:wrap;gap:.5em 1.4em;align-items:center;margin:.6em 0;position:sticky;top:0;
background:#f4f6f8;padding:.5em .8em;border:1px solid #e1e5ea;border-radius:6px;z-index:2}
#ex label{font-size:.9em;color:#555;display:inline-flex;gap:.4em;align-items:center}
#ex select,#ex input[type=search]{font:inherit;font-size:.9em;padding:.2em .3em;max-width:16em}
#ex .group{scroll-margin-top:5.5em}#ex .legend{font-size:.85em;color:#555;margin:.2em 0 .8em}
.chips{display:inline-flex;flex-wrap:wrap;gap:.3em}.chip{font:inherit;font-size:.85em;border:1px solid #ccd;
border-radius:1em;padding:.15em .7em;background:#f7f8fa;cursor:pointer}.chip.on{background:#1f4e79;color:#fff;border-color:#1f4e79}
.chip .n{opacity:.7;margin-left:.3em}
#ex-count{font-size:.9em;color:#333}.group{border:1px solid #dde;border-radius:6px;margin:.8em 0;padding:.4em .8em;
background:#fff}.group>header{display:flex;flex-wrap:wrap;gap:.4em .8em;align-items:baseline;font-size:.92em}
.group>header b{font-size:1.05em}.badge{border-radius:3px;padding:0 .45em;font-size:.85em;color:#fff;background:#777}
.badge.ok,.badge.llm{background:#2ca02c}.badge.fallback{background:#e67e00}.badge.error{background:#d62728}
.badge.budget_stopped{background:#9467bd}.badge.no_llm,.badge.selected{background:#1f77b4}
.why{color:#8a4b00;font-size:.9em}ol.cands{margin:.3em 0;padding-left:1.6em}
.cand{margin:.35em 0;padding:.3em .5em;border-left:3px solid transparent}
.cand.chosen{background:#eef7ee;border-left-color:#2ca02c}.cand .meta{font-size:.8em;color:#666}
.cand .mark{font-weight:bold;color:#1d7a1d;margin-right:.4em}.cand .txt{white-space:pre-wrap;word-break:break-word}
.cand .inp{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;margin-top:.2em;padding:.2em .4em;font-size:.92em}
.cand .cw{font-size:.88em;color:#1d5a1d;font-style:italic}.more{font-size:.8em;margin-left:.4em;cursor:pointer;
border:none;background:none;color:#1f4e79;text-decoration:underline}
svg.map{max-width:100%;height:auto;display:block;margin:.5em 0}svg.map .pool{stroke:#c3cad3;stroke-width:3;
stroke-linecap:round;fill:none}svg.map a.cl circle{fill:rgba(31,78,121,.08);stroke:#1f4e79;stroke-width:1.2}
svg.map a.cl:hover circle,svg.map a.cl.on circle{fill:rgba(31,78,121,.3);stroke-width:2.5}
svg.map a.sel circle{fill:#d62728;stroke:#fff;stroke-width:.8}svg.map a{cursor:pointer}
#ex-more{margin:.5em 0}
"""

# plain JS, no library: builds the list from the JSON blob with textContent only
SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("explorer-data").textContent);
  var S = {cluster: "", source: "", status: "", q: "", limit: D.page};
  var list = document.getElementById("ex-list"), count = document.getElementById("ex-count");
  var fc = document.getElementById("f-cluster"), fs = document.getElementById("f-source");
  var fq = document.getElementById("f-search"), more = document.getElementById("ex-more");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function rowOf(k) { return D.rows[k] || {id: "", i: "", x: "", src: ""}; }
  D.groups.forEach(function (g) {
    var hay = [g.why || ""], src = {};
    g.cand.forEach(function (k) {
      var r = rowOf(k);
      hay.push(r.id, r.i, r.x, r.why || "");
      if (r.src) src[r.src] = 1;
    });
    (g.cw || []).forEach(function (w) { hay.push(w); });
    g._hay = hay.join("\n").toLowerCase();
    g._src = src;
  });
  function options(select, values, label) {
    values.forEach(function (v) { var o = el("option", null, label(v)); o.value = String(v); select.appendChild(o); });
  }
  var clusters = {}, sources = {}, statuses = {};
  D.groups.forEach(function (g) {
    if (g.c !== null && g.c !== undefined) clusters[g.c] = (clusters[g.c] || 0) + 1;
    Object.keys(g._src).forEach(function (s) { sources[s] = (sources[s] || 0) + 1; });
    statuses[g.st] = (statuses[g.st] || 0) + 1;
  });
  options(fc, Object.keys(clusters).map(Number).sort(function (a, b) { return a - b; }),
          function (c) { return "cluster " + c + " (" + clusters[c] + ")"; });
  options(fs, Object.keys(sources).sort(), function (s) { return s + " (" + sources[s] + ")"; });
  var chips = document.getElementById("f-status");
  function chip(value, label, n) {
    var b = el("button", "chip", label);
    b.type = "button"; b.setAttribute("data-status", value);
    if (n !== undefined) b.appendChild(el("span", "n", n));
    b.addEventListener("click", function () { S.status = value; S.limit = D.page; render(); });
    chips.appendChild(b);
  }
  chip("", "all", D.groups.length);
  Object.keys(statuses).sort().forEach(function (s) { chip(s, s, statuses[s]); });
  function matches(g) {
    if (S.cluster !== "" && String(g.c) !== S.cluster) return false;
    if (S.source !== "" && !g._src[S.source]) return false;
    if (S.status !== "" && g.st !== S.status) return false;
    if (S.q !== "" && g._hay.indexOf(S.q) < 0) return false;
    return true;
  }
  function textBlock(cls, text, cut) {
    var box = el("div", cls), full = text || "";
    var span = el("span", null), btn = null;
    box.appendChild(span);
    var longer = full.length > D.show;
    function show(all) {
      span.textContent = all || !longer ? full : full.slice(0, D.show) + "…";
      if (btn) btn.textContent = all ? "less" : "more";
    }
    if (longer) {
      btn = el("button", "more"); btn.type = "button";
      var open = false;
      btn.addEventListener("click", function () { open = !open; show(open); });
      box.appendChild(btn);
    }
    show(false);
    if (cut) box.appendChild(el("span", "meta", " [+" + cut + " characters not embedded in this page]"));
    return box;
  }
  function card(g, firstOfCluster) {
    var sec = el("section", "group st-" + g.st);
    sec.setAttribute("data-cluster", String(g.c));
    sec.setAttribute("data-status", g.st);
    if (firstOfCluster) sec.id = "cluster-" + g.c;
    var head = el("header");
    head.appendChild(el("b", null, D.llm ? "group " + g.g : "selected rows"));
    head.appendChild(el("span", null, g.c === null || g.c === undefined ? "no cluster" : "cluster " + g.c));
    head.appendChild(el("span", "badge " + g.st, g.st));
    head.appendChild(el("span", "meta", g.chosen.length + " of " + g.cand.length + " chosen"));
    if (g.why) head.appendChild(el("span", "why", g.why));
    sec.appendChild(head);
    var ol = el("ol", "cands");
    g.cand.forEach(function (row) {
      var r = rowOf(row), k = g.chosen.indexOf(row), id = r.id;
      var li = el("li", "cand" + (k >= 0 ? " chosen" : ""));
      li.setAttribute("data-id", id);
      var meta = el("div", "meta");
      if (k >= 0) {
        meta.appendChild(el("span", "mark", "✓ chosen"));
        var by = (g.by && g.by[k]) || r.st;
        if (by) meta.appendChild(el("span", "badge " + by, by));
        meta.appendChild(document.createTextNode(" "));
      }
      meta.appendChild(document.createTextNode(id + (r.src ? " · " + r.src + (r.r !== undefined ? ":" + r.r : "") : "")));
      if (r.missing) meta.appendChild(document.createTextNode(" · text not found in the dedup rows"));
      li.appendChild(meta);
      li.appendChild(textBlock("txt", r.i, r.ic));
      if (r.x) li.appendChild(textBlock("inp", r.x, r.xc));
      var why = (k >= 0 && g.cw && g.cw[k]) || (k >= 0 && r.why) || "";
      if (why) li.appendChild(el("div", "cw", "why: " + why));
      ol.appendChild(li);
    });
    sec.appendChild(ol);
    return sec;
  }
  function render() {
    var hits = D.groups.filter(matches), seen = {};
    list.textContent = "";
    hits.slice(0, S.limit).forEach(function (g) {
      var first = !seen[g.c]; seen[g.c] = 1;
      list.appendChild(card(g, first));
    });
    var what = D.llm ? "groups" : "clusters";
    count.textContent = hits.length + " of " + D.groups.length + " " + what + " match" +
      (hits.length > S.limit ? "; showing the first " + S.limit : "");
    more.hidden = hits.length <= S.limit;
    fc.value = S.cluster; fs.value = S.source;
    Array.prototype.forEach.call(chips.children, function (b) {
      b.classList.toggle("on", b.getAttribute("data-status") === S.status);
    });
    Array.prototype.forEach.call(document.querySelectorAll("svg.map a.cl"), function (a) {
      a.classList.toggle("on", a.getAttribute("data-cluster") === S.cluster);
    });
  }
  fc.addEventListener("change", function () { S.cluster = fc.value; S.limit = D.page; render(); });
  fs.addEventListener("change", function () { S.source = fs.value; S.limit = D.page; render(); });
  fq.addEventListener("input", function () { S.q = fq.value.trim().toLowerCase(); S.limit = D.page; render(); });
  more.addEventListener("click", function () { S.limit += D.page; render(); });
  document.getElementById("f-clear").addEventListener("click", function () {
    S.cluster = S.source = S.status = S.q = ""; fq.value = ""; S.limit = D.page; render();
  });
  function fromHash() {
    var m = /^#cluster-(-?\d+)$/.exec(window.location.hash);
    if (!m) return;
    S.cluster = clusters[m[1]] ? m[1] : "";
    S.source = S.status = S.q = ""; fq.value = ""; S.limit = D.page;
    render();
    var note = document.getElementById("ex-note");
    note.textContent = clusters[m[1]] ? "" : "Cluster " + m[1] + " has no group embedded in this page.";
    var target = document.getElementById("cluster-" + m[1]) || document.getElementById("explorer");
    target.scrollIntoView();
  }
  window.addEventListener("hashchange", fromHash);
  Array.prototype.forEach.call(document.querySelectorAll("svg.map a"), function (a) {
    a.addEventListener("click", function () {  // the same link again: no hashchange, filter anyway
      if (window.location.hash === a.getAttribute("href")) window.setTimeout(fromHash, 0);
    });
  });
  render();
  fromHash();
})();
"""


def _json_blob(data: dict) -> str:
    """JSON for an inline ``<script type="application/json">``: every ``<``, ``>`` and ``&`` as a
    ``\\u`` escape, so no text can end the script element or open a comment."""
    s = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def section(ex: Explorer | None, svg: str, not_run_note: str) -> str:
    """The explorer's HTML: heading, the map, filters, the list (built by the script), data, script."""
    parts = ['<h2 id="explorer">Selection explorer</h2>']
    if ex is None:
        parts.append(not_run_note)
        return "\n".join(parts)
    parts.append('<div id="ex">')
    what = "LLM group" if ex.llm else "cluster with selected rows"
    intro = (f"Every {what} of the selection: the candidates the LLM was shown, the chosen ones highlighted, "
             "the status and the reason." if ex.llm else
             f"Strategy <b>{html.escape(ex.strategy)}</b> does not call an LLM: the selected rows, by cluster.")
    parts.append(f"<p>{intro} Click a ring or a red point on the map to list its cluster.</p>")
    if ex.capped:
        parts.append(f'<p class="note" id="ex-capped">This page embeds {len(ex.groups):,} of {ex.total_groups:,} '
                     f'{what}s (at most {MAX_GROUPS:,} and {MAX_TEXT_CHARS:,} characters of text; the groups that '
                     f'did not end ok first, then by group id). The counts and spend above cover all of them.</p>')
    if svg:
        parts.append(svg)
        parts.append('<p class="legend">Grey: a sample of the pool; rings: clusters (area grows with the rows in '
                     'them); red: selected rows. Same projection as the pool map above.</p>')
    parts.append(
        '<div class="bar"><label>cluster <select id="f-cluster"><option value="">all</option></select></label>'
        '<label>source <select id="f-source"><option value="">all</option></select></label>'
        '<label>status <span class="chips" id="f-status"></span></label>'
        '<label>search <input id="f-search" type="search" placeholder="text, id or reason"></label>'
        '<button type="button" id="f-clear" class="chip">clear</button>'
        '<span id="ex-count"></span><span id="ex-note" class="why"></span></div>')
    parts.append('<div id="ex-list"></div><button type="button" id="ex-more" class="chip" hidden>show more</button>')
    parts.append('<noscript><p class="note">The explorer needs JavaScript; the table below lists the first '
                 'selected rows.</p></noscript>')
    parts.append(f'<script type="application/json" id="explorer-data">{_json_blob(ex.data())}</script>')
    parts.append("</div>")
    parts.append(f"<script>{SCRIPT}</script>")
    return "\n".join(parts)
