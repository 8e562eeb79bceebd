"""Evaluation beside the engine: BEIR retrieval metrics (pytrec_eval)."""
