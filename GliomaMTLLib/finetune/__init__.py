"""Corrections, fine-tuning and model versions: the reader's loop.

- :mod:`~GliomaMTLLib.finetune.store`: the append-only correction store (``gliomamtl correct``, ``store``).
- :mod:`~GliomaMTLLib.finetune.correct`: checks a reader's correction and stores it with its case.
- :mod:`~GliomaMTLLib.finetune.job`: fine-tunes a version on the store with synthetic replay
  (``gliomamtl finetune``).
- :mod:`~GliomaMTLLib.finetune.registry`: versions of each model, never overwritten, one active
  (``gliomamtl models``).

This package imports nothing heavy at import time (the command line lists it in under a second).
"""

from GliomaMTLLib.finetune.registry import ModelRegistry, ModelVersion, RegistryError
from GliomaMTLLib.finetune.store import CorrectionStore, StoreEntry, StoreError

__all__ = ["CorrectionStore", "ModelRegistry", "ModelVersion", "RegistryError", "StoreEntry", "StoreError"]
