"""``selectllm evaluate``: fine-tune a small LM on each strategy's picks and score a held-out set (on demand)."""
