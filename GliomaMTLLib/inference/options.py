"""Choices the command line offers before anything heavy is imported.

The ``--help`` of every sub-command is built from these constants; this module imports nothing
(no torch, MONAI, NumPy or SimpleITK), so ``gliomamtl --help`` stays fast. The modules that use
them (:mod:`~GliomaMTLLib.inference.device`, :mod:`~GliomaMTLLib.inference.engines`,
:mod:`~GliomaMTLLib.inference.predictor`) re-export them.
"""

from __future__ import annotations

#: Bundle used when no ``--model`` is given.
DEFAULT_MODEL = "gliomamtl_adult"
#: ``--device`` values (``cuda:N`` is accepted too).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: ``model.json`` / recipe ``"tta"`` value besides true and false: test-time flips on a GPU only.
TTA_ON_GPU = "gpu"


def check_tta(setting: object) -> bool | str:
    """``setting`` when it is a valid ``"tta"``: True, False or :data:`TTA_ON_GPU`.

    Raises:
        ValueError: any other value.
    """
    if isinstance(setting, bool) or setting == TTA_ON_GPU:
        return setting  # type: ignore[return-value]
    raise ValueError(f"tta must be true, false or {TTA_ON_GPU!r}, got {setting!r} ({TTA_ON_GPU!r}: test-time flips "
                     "on a GPU only)")
#: ``--engine`` values: ONNX Runtime on the CPU when installed (``auto``), or PyTorch.
ENGINES: tuple[str, ...] = ("auto", "torch", "onnx")
