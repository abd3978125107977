"""selectllm: choose which unlabeled instructions are worth annotating, at data-lake scale."""

__version__ = "0.1.0"
