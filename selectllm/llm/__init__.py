"""The LLM layer: token counting, money, rate limits, answer cache, the OpenAI-compatible client
(:mod:`selectllm.llm.client`) and the local simulator (:mod:`selectllm.llm.simulator`).

Submodules are imported explicitly so that ``import selectllm.llm`` stays cheap."""
