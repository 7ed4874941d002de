"""Retrieval: the two-tower retriever, the baselines that also serve as candidate sources, the union of
sources a user's ranker sees, and the exact / ANN item index."""
