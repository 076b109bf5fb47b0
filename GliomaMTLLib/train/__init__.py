"""Training: recipes (read from ``training/configs``), data pipeline, trainer, evaluation, export.

Run as ``gliomamtl train`` / ``gliomamtl evaluate`` or ``python -m GliomaMTLLib.train.<module>``.
"""
