"""``privacy.output: original``: the source text of the selected rows, read again from the input
files for ``selected.jsonl`` only (every other file of the run directory holds masked text).

A selected row is named by ``(source, source_row[, user_turn])``.  Each source file that holds a
selected row is read once, whole, in this process, with the same reader, preset, fields, turn mode
and table metadata (partition values, renamed columns, deleted rows) as the dedup stage; each
record found is masked again and must give the row's id, so a file changed since dedup is an
error, never a wrong row.
"""

from __future__ import annotations

from selectllm.errors import UserError


def original_rows(cfg, rows: dict[str, dict], keep: list[str]) -> dict[str, dict]:
    """``{id: {"instruction", "input", *keep}}`` from the source files, for the ``rows`` given
    (``{id: row}`` with ``source``, ``source_row`` and, for a chat preset, ``user_turn``)."""
    from selectllm.dedup.stage import privacy_settings, resolve_inputs
    from selectllm.privacy.redact import DetectTimeout, redactor
    from selectllm.text.formats import detect_format, iter_rows
    from selectllm.text.normalize import clean_text, content_id
    from selectllm.text.splits import Split

    _, entities, regions, timeout_s = privacy_settings(cfg)
    red = redactor(entities, regions, timeout_s)
    wanted: dict[str, dict[tuple, str]] = {}
    for ident, r in rows.items():
        wanted.setdefault(r["source"], {})[(int(r["source_row"]), r.get("user_turn"))] = ident
    files = {f.url: f for f in resolve_inputs(cfg).files}
    fields = cfg.input.fields.model_dump() if cfg.input.fields is not None else None
    chat = "user_turn" in next(iter(rows.values()), {})
    out: dict[str, dict] = {}
    for source, want in wanted.items():
        f = files.get(source)
        if f is None:
            raise UserError(f"privacy.output original: {source} is no longer among input.paths; rerun dedup")
        split = Split(url=source, kind=detect_format(source, cfg.input.format), meta=f.meta)
        for row, _, instr, inp, reason, more in iter_rows(source, cfg.input.format, cfg.input.preset, fields,
                                                          cfg.dedup.max_chars, split, cfg.input.turn, keep):
            ident = want.get((row, (more or {}).get("user_turn") if chat else None))
            if ident is None or reason is not None:
                continue
            values = {"instruction": instr, "input": inp, **{k: (more or {}).get(k) for k in keep}}
            try:
                masked, _ = red.mask_row(values)
            except DetectTimeout:
                continue  # not the row dedup kept (that one was masked in time): reported below
            if content_id(clean_text(masked["instruction"]), clean_text(masked["input"])) == ident:
                out[ident] = values
    missing = [i for i in rows if i not in out]
    if missing:
        r = rows[missing[0]]
        raise UserError(f"privacy.output original: {len(missing)} selected rows are not in their source file as "
                        f"dedup read it (e.g. {r['source']} row {r['source_row']}): the input changed; rerun dedup")
    return out
