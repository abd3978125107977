"""Privacy: personal data and secrets masked before any row is written (README, Privacy).

* :mod:`selectllm.privacy.detect`: Presidio's pattern recognizers (no spaCy model) and the
  secret formats of ``secrets.toml`` (gitleaks' rule set), offline, failing closed.
* :mod:`selectllm.privacy.redact`: typed placeholders numbered within a row, findings per row,
  one engine per process.
* The dedup stage's reading tasks mask every row as it is parsed
  (:func:`selectllm.dedup.stage._redact`), so every output of dedup — the one place row text
  enters the run directory — is masked (:data:`MASKED_OUTPUTS`).
* :mod:`selectllm.privacy.original`: ``privacy.output: original``, the source text of the selected
  rows, for ``selected.jsonl`` only (:data:`SOURCE_TEXT_OUTPUTS`, read by the report, which
  shows the masked text instead).
"""

from __future__ import annotations

# outputs written from masked rows only (dedup's reading tasks mask before anything is made)
MASKED_OUTPUTS = ("dedup.rows", "dedup.quarantine", "dedup.duplicates", "dedup.stats", "dedup.minhash")
# outputs that may hold source text (privacy.output: original) -> the stages allowed to read them,
# each of which shows the masked text instead (report/html.py: _masked)
SOURCE_TEXT_OUTPUTS = {"select.selected": ("report",),
                       # evaluate's held-out rows are read as they are (a local test file): its
                       # results and page hold example answers; the report shows only the figures
                       # of the one and links the other (report/html.py: evaluation_section)
                       "evaluate.results": ("report",), "evaluate.page": ("report",)}
# the functions that turn input files into row text: only dedup and privacy.original may call them
ROW_READERS = ("iter_rows", "iter_records", "chat_rows", "staged_dataframe", "dedup_dataframe", "_reader")
