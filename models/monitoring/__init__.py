"""Monitoring: data drift, recommendation quality and fairness reports, and exposure-aware re-ranking.

Modules: ``drift`` (Evidently data drift of the train window against one day), ``quality`` (Evidently recsys
metrics), ``fairness`` (per-group quality, exposure by creator group, popularity bias), ``rerank``
(exposure-constrained re-ranking and its cost). Plain pandas/numpy/duckdb plus Evidently 0.7.23, no Dagster:
``orchestration/assets/monitoring.py`` wires them into assets, checks and the drift sensor.
"""
