"""Did the run hear the LLM?  Health counts of the select stage's decisions, its one-line summary
and the check that fails the stage (``select.min_llm_share``).

* ``llm_groups``: groups the LLM was asked about (not the groups within their quota);
  ``llm_decided``: those it decided (a usable answer); ``llm_share`` = decided / asked, budget
  stops left out of both (``select.strict_budget`` governs those).
* ``fallback_causes``: groups that fell back, by cause (``error: <cause>``, ``unusable: <parse
  class>``, ``budget_stopped``).
* ``parse_classes``: answers by parse class (``select.parse.PARSE_CLASSES``, ``repaired``).
* ``pick_positions``: LLM picks by 1-based position in the shown order, and ``shown``: how many
  candidates most prompts showed (so position 1 is expected ``1 / shown`` of the picks).
"""

from __future__ import annotations

from collections import Counter

from selectllm.errors import UserError

FIXES = {
    "error": "check llm.base_url, llm.model and the server (select/requests.jsonl has each error)",
    "unusable": "the model's answers could not be read: try llm.structured_output: json_schema (or the form your server takes), a stronger model, "
                "or read the parse column of select/decisions.parquet",
    "budget_stopped": "raise llm.max_usd (selectllm estimate prices the run)",
}


def _asked(d: dict) -> bool:
    by = d.get("chosen_by") or []
    return not (by and all(b == "no_llm" for b in by))


def health(decisions: list[dict]) -> dict:
    asked = [d for d in decisions if _asked(d)]
    counted = [d for d in asked if d["status"] != "budget_stopped"]
    decided = sum(d["status"] == "ok" for d in counted)
    causes = Counter(d.get("cause") or d["status"] for d in asked if d["status"] != "ok")
    classes = Counter(c for d in asked for c in (d.get("parse") or []))
    positions = Counter(int(p) for d in asked for p in (d.get("picked_positions") or []))
    shown = Counter(len(d["candidate_ids"]) for d in asked if d.get("shown_order") is not None)
    out = {"llm_groups": len(counted), "llm_decided": decided,
           "llm_share": round(decided / len(counted), 4) if counted else None,
           "fallback_causes": dict(causes.most_common()), "parse_classes": dict(classes.most_common()),
           "pick_positions": {str(k): v for k, v in sorted(positions.items())},
           "shown": shown.most_common(1)[0][0] if shown else None}
    picks = sum(positions.values())
    if picks:
        out["position1_share"] = round(positions.get(1, 0) / picks, 4)
    agreements = [d["agreement"] for d in asked if d.get("agreement") is not None]
    if agreements:
        out["agreement"] = round(sum(agreements) / len(agreements), 4)
    return out


def health_line(h: dict, structured: str | None = None) -> str:
    """One line: decided share, fallbacks by cause, position-1 share, structured mode."""
    if not h["llm_groups"] and not h["fallback_causes"]:
        return "LLM health: no group needed the LLM"
    share = f"{h['llm_share']:.0%}" if h["llm_share"] is not None else "n/a"
    causes = ", ".join(f"{k} {v}" for k, v in h["fallback_causes"].items()) or "none"
    parts = [f"LLM health: decided {h['llm_decided']}/{h['llm_groups']} groups ({share})", f"fallbacks: {causes}"]
    if "position1_share" in h and h.get("shown"):
        parts.append(f"picks at shown position 1: {h['position1_share']:.0%} (uniform {1 / h['shown']:.0%})")
    if "agreement" in h:
        parts.append(f"orders agreed on {h['agreement']:.0%} of picks")
    parts.append(f"structured output: {structured or 'not recorded'}")
    return "; ".join(parts)


def check_share(h: dict, min_share: float) -> None:
    """Raise a one-line :class:`UserError` when the LLM decided fewer than ``min_share`` of the
    groups it was asked about: the commonest cause and its fix (answers bought stay cached)."""
    if not h["llm_groups"] or h["llm_share"] >= min_share:
        return
    causes = {k: v for k, v in h["fallback_causes"].items() if k != "budget_stopped"}
    top, n = max(causes.items(), key=lambda kv: kv[1]) if causes else ("unknown", 0)
    fix = FIXES.get(top.split(":")[0], "see select/decisions.parquet")
    raise UserError(f"select: the LLM decided {h['llm_decided']} of {h['llm_groups']} groups "
                    f"({h['llm_share']:.0%} < select.min_llm_share {min_share}); commonest cause: {top} "
                    f"({n} groups); fix: {fix}. Answers already bought stay cached.")
