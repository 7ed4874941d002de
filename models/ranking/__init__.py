"""Ranking: the pair ranker, the stacked ranker over multi-source candidates, their features, and MMR re-ranking."""
