"""LLM operations: the model catalog, exact prices, budgets and token counting."""
