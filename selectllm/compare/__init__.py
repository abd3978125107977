"""``selectllm compare``: several strategies side by side (the on-demand ``compare`` stage)."""
