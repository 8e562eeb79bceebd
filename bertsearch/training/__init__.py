"""Training beside the engine: bertsearch trains its own default models with these (reader, reranker, encoder)."""
