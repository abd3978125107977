"""A local OpenAI-compatible LLM server for demos, tests and benchmarks (aiohttp).

Endpoints (all under ``/v1``; every one but ``/v1/health`` and ``/v1/stats`` needs
``Authorization: Bearer <anything non-empty>``, else 401):

* ``POST /v1/chat/completions`` -> a ChatCompletion with ``usage``.  Unknown model -> 404;
  ``prompt + max_tokens`` over the context limit (default 128k) -> 400
  ``context_length_exceeded``; an answer longer than ``max_tokens`` (or
  ``max_completion_tokens``) is cut and gets ``finish_reason: "length"``.
* ``GET /v1/models``, ``GET /v1/health``, ``GET /v1/stats`` (counters, see :class:`SimState`).
* Batch API: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` (all, newest
  first, one page), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.  A batch completes ``batch_delay_s`` after creation; its
  output file holds one JSONL line per successful request (``custom_id`` + ``response.body``),
  failed lines go to ``error_file_id``.  Batch lines skip latency and rate limits.

Answers are deterministic and transparent:

* **Selection prompts** -- the user message holds candidates delimited as
  ``<candidate id="3">\\n...text...\\n</candidate>`` and a line ``Select exactly K
  instruction(s)``.  Each candidate scores ``log(1 + chars) + distinct_words / words
  + (0.5 if it has a non-empty "### Input:" part)`` (chars of the stripped text; words are
  ``\\w+`` runs, lower-cased).  The top K (ties -> lower id), best first, are answered as
  ``[3], [7]`` in plain text or ``{"selected": [3, 7]}`` when ``response_format`` asks for JSON
  (with a ``json_schema``, its first array property's name is used instead of ``selected``).
  Asked for reasons (``select.reasons``: a schema whose array holds objects, or the text form's
  "its identifier in brackets, then a one-line reason"), each pick comes with the heuristic's
  terms as its reason: ``{"choices": [{"id": 3, "reason": "score 7.41: 412 characters, 83%
  distinct words, has an input"}]}`` or one ``[3] score 7.41: ...`` line per pick.
* **Rating prompts** -- a message containing ``Rate the following``: the text after that phrase
  has ``w`` words and scores ``min(5, 1 + floor(log2(1 + w / 8)))``, answered ``Score: 4`` or
  ``{"score": 4}`` (first integer property of a ``json_schema``).
* Anything else: ``Simulated answer: <the first 12 words of the last user message>``
  (``{"answer": ...}`` in JSON mode).

Knobs (:class:`~selectllm.config.SimulatorConfig` and CLI flags): ``latency_ms`` (added to every
admitted chat request), ``rpm`` / ``tpm`` (sliding 60 s window over admitted requests; a request
is charged ``prompt_tokens + completion_tokens``; over the limit -> 429 with ``retry-after``
(whole seconds, rounded up) and ``retry-after-ms``; a single request above ``tpm`` -> 429 with
code ``request_too_large``, which retrying cannot fix), ``error_rate`` (500/503 answers) and
``malformed_rate`` (200 answers of garbage text with no ids or digits), ``seed``.

Whether an admitted request fails or is malformed is a pure function of
``sha256(request body)``, ``seed`` and how many times this exact body was admitted before, so a
run is reproducible and a retried request can succeed.

When ``rpm`` / ``tpm`` are set, every chat response carries ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the ``-tokens``
variants (OpenAI formats: ``"20ms"``, ``"1.5s"``, ``"6m0s"``); *reset* is the time until the
window is empty again (back to its initial state).  Unlimited dimensions send no headers.

Request log (``log_path``, a local path or an object store URL): one JSON line per received request: ``ts``, ``path``, ``status``,
``key`` (the client's ``X-Selectllm-Key`` header, if any), ``body_sha256`` (16 hex),
``attempt``, ``prompt_tokens``, ``completion_tokens``.  Never the Authorization header.

Run it: ``python -m selectllm.llm.simulator --port 0 --port-file p.txt [--rpm 60] ...``, or
:func:`start_simulator` (a subprocess, so it never competes with the client for the GIL).
Binds 127.0.0.1 unless told otherwise.

Modules: ``answers`` (the answer model, pure functions), ``chat`` (server state and the chat
endpoint), ``batch`` (the Batch API), ``server`` (the application, ``main``, :func:`start_simulator`).
"""

from selectllm.llm.simulator.answers import (MALFORMED, answer_text, candidate_score, rating_score,  # noqa: F401
                                             score_reason, select_ids)
from selectllm.llm.simulator.chat import (DEFAULT_BATCH_DELAY_S, DEFAULT_CONTEXT_LIMIT, DEFAULT_MODELS,  # noqa: F401
                                          SimState)
from selectllm.llm.simulator.server import SimulatorHandle, build_app, main, serve, start_simulator  # noqa: F401
