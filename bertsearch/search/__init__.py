"""Search: first-stage retrieval and fusion, cross-encoder reranking, and answers from the reader."""
