"""Personalized copy: prompts, the generator (own small LM or any pretrained model), guardrails, cache, metrics.

Modules: ``prompts`` (tasks, styles, templates), ``generator`` (batched generation), ``train`` (train the
default LM / fine-tune), ``guardrails``, ``cache``, ``service`` (``generate_content``), ``evaluation``,
``artifacts`` (registry), ``daily`` (inputs and output of the daily asset).
"""
