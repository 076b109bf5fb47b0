"""`Predictor`: a model bundle run on a case, end to end (the cascade of ARCHITECTURE.md).

Stages (``model.json`` ``"stages"``, as written by ``training/export.py``; sizes are voxels in
array order (z, y, x)):

``localizer`` (optional; mode ``whole``)
    ``{"network": NetConfig, "preprocess": PreprocessConfig (e.g. spacing 4 mm), "input_size": [z, y, x],
    "threshold": 0.5, "keep_fraction": 0.1, "margin_mm": 8}``. The whole brain at low resolution,
    centred and padded in ``input_size`` (sliding windows of that size if the brain is larger),
    seg path only. P(WT) = 1 - P(background), restricted to the brain, thresholded; the largest
    connected component and every component at least ``keep_fraction`` of its size are kept; their
    bounding box, grown by ``margin_mm`` plus one localizer voxel, is the tumor box.
``main``
    ``{"network": NetConfig, "preprocess": PreprocessConfig (e.g. 1-1.5 mm), "mode": ..., "crop_size":
    [z, y, x], "overlap": 0.25, "sw_batch_size": 1}``, by mode:

    - ``crop`` (default with a localizer): one ``crop_size`` window centred on the tumor box. If
      the box is larger than the window, the segmentation covers the box with overlapping
      windows (`GliomaMTLLib.inference.windows`, Gaussian blending as in MONAI) and the genotype
      comes from the window centred on the tumor. When the localizer finds nothing, windows
      cover the whole brain as in ``sliding``.
    - ``sliding`` (default without a localizer): windows over the whole brain; the genotype
      window is centred on the largest tumor component the main network found.
    - ``whole``: the whole brain centred in one ``input_size`` window, or resized (trilinear) to
      ``resize_to`` and the probabilities resized back (paper 001's fixed 144^3 input).

The softmax label probabilities of the main window(s) go back to the input grid with
:func:`GliomaMTLLib.preprocess.to_input_grid` (linear; exact indexing when the preprocessing did
not resample), applied to the window's part of the preprocessed grid only; outside it every
voxel is background. The label map is decoded on the input grid (the argmax, or nested region
thresholds: :mod:`GliomaMTLLib.inference.decoding`), then post-processed
(:mod:`GliomaMTLLib.inference.postprocess`). Genotype probabilities are ``softmax(logits / T)``
with ``model.json`` ``"calibration"`` ``{task: T}`` (or ``{task: {"temperature": T}}``).

This is the only implementation of the cascade: ``gliomamtl evaluate``, the export's calibration
and the model card's metrics run it too, on a bundle or on a training run folder before export
(:mod:`GliomaMTLLib.train.run_model`).

Sequences: ``model.json`` ``"required_sequences"`` (default: all of ``"sequences"``, the input
channels in order) must be present; ``"optional_sequences"`` may be missing: their channel is zero
after normalisation, as training's sequence dropout feeds it, and a warning names them.

Cost: the PyTorch networks are built on first use only (:attr:`Predictor.networks`); with the
ONNX export cached, a prediction on the CPU neither builds them nor imports MONAI (MONAI's sliding
windows load only when a stage slides). Arrays on the input grid are allocated once: region
probabilities are kept inside the window's box (:class:`~GliomaMTLLib.inference.prediction.BoxedVolumes`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from scipy import ndimage

from GliomaMTLLib.bundle import BundleError, ModelBundle, load_bundle
from GliomaMTLLib.inference.checks import input_warnings
from GliomaMTLLib.inference.genotype_call import genotype_calls, withhold
from GliomaMTLLib.inference.engines import OnnxRunner, TorchRunner, onnx_runner, resolve_engine
from GliomaMTLLib.inference.lesions import core_lesion_count
from GliomaMTLLib.inference.device import (
    configure_cpu_threads,
    inference_context,
    is_out_of_memory,
    release_gpu_memory,
    resolve_device,
)
from GliomaMTLLib.inference.decoding import Decoding
from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess, regions_for_labels, volumes_ml
from GliomaMTLLib.inference.prediction import BoxedVolumes, Prediction
from GliomaMTLLib.inference.task_logits import TaskLogits, build_task_logits
from GliomaMTLLib.inference.windows import sliding_window_probs
from GliomaMTLLib.genotype.path import age_status, ood_warning
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.labels import ET
from GliomaMTLLib.io.validation import MissingSequenceError
from GliomaMTLLib.nets import NetConfig
from GliomaMTLLib.preprocess import (
    window_record,
    CropBox,
    PreprocessConfig,
    Preprocessed,
    SpatialRecord,
    bounding_box,
    crop,
    crop_around,
    physical_to_continuous_index,
    preprocess,
    to_input_box,
    uncrop,
)

logger = logging.getLogger(__name__)
ProgressCallback = Callable[[float, str], None]
from GliomaMTLLib.inference.options import DEFAULT_MODEL, TTA_ON_GPU, check_tta  # noqa: E402  (DEFAULT_MODEL re-exported)


STAGE_MODES = ("whole", "crop", "sliding")


@dataclass(frozen=True)
class StageSpec:
    """One stage of a bundle, parsed and checked.

    Attributes:
        mode: ``whole`` (the brain centred in one ``window``, or resized to it when
            ``resize_to``), ``crop`` (a ``window`` centred on the tumor) or ``sliding``
            (``window``-sized windows over the brain).
        window: network input size (z, y, x).
        resize_to: the whole brain is resized (trilinear) to ``window`` instead of padded.
    """

    name: str
    network: NetConfig
    preprocess: PreprocessConfig
    window: tuple[int, int, int]
    options: Mapping[str, Any]
    mode: str = "crop"
    resize_to: bool = False

    def option(self, key: str, default: Any) -> Any:
        return self.options.get(key, default)


def _parse_stage(bundle: ModelBundle, name: str) -> StageSpec:
    """Parse a stage: its window is ``resize_to``, else ``crop_size``, else ``input_size``; its mode
    is ``"mode"``, else ``whole`` for the localizer and ``crop`` for the main stage (``sliding``
    when the bundle has no localizer)."""
    where = f"{bundle.folder / 'model.json'}: stage {name!r}"
    stage = bundle.stages[name]
    try:
        network = NetConfig.from_dict(stage["network"])
        pre = stage.get("preprocess", stage.get("preprocessing", {}))
        pre_config = PreprocessConfig.from_dict(pre or {})
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"{where}: {exc}") from exc
    size_key = next((k for k in ("resize_to", "crop_size", "input_size") if stage.get(k) is not None), None)
    if size_key is None:
        raise BundleError(f"{where} needs 'crop_size' or 'input_size' (network input in voxels, z y x)")
    size = stage[size_key]
    window = tuple(int(v) for v in (size if np.ndim(size) else [size] * 3))
    m = network.size_multiple
    if len(window) != 3 or any(v <= 0 or v % m for v in window):
        raise BundleError(f"{where}: {size_key} {list(window)} must be 3 positive multiples of {m} (2**(depth-1))")
    if network.in_channels != len(bundle.sequences):
        raise BundleError(
            f"{where}: network takes {network.in_channels} channel(s) but the bundle lists sequences {list(bundle.sequences)}"
        )
    default = "whole" if name == "localizer" else ("crop" if "localizer" in bundle.stages else "sliding")
    mode = str(stage.get("mode") or default)
    if mode not in STAGE_MODES or (name == "localizer" and mode == "crop"):
        raise BundleError(f"{where}: mode {mode!r} is not one of {STAGE_MODES} (a localizer cannot be 'crop')")
    return StageSpec(name, network, pre_config, window, stage, mode, size_key == "resize_to")  # type: ignore[arg-type]


def _temperatures(bundle: ModelBundle) -> dict[str, float]:
    out: dict[str, float] = {}
    for task, value in (bundle.meta.get("calibration") or {}).items():
        t = value.get("temperature", 1.0) if isinstance(value, Mapping) else value
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise BundleError(f"{bundle.folder / 'model.json'}: calibration of {task!r} is not a number: {value!r}") from None
        if not t > 0:
            raise BundleError(f"{bundle.folder / 'model.json'}: calibration temperature of {task!r} must be > 0, got {t}")
        out[task] = t
    return out



def _load_model(model: "str | Path | ModelBundle") -> ModelBundle:
    """A bundle object, a bundle folder or name, or a training run folder (evaluated before export,
    :mod:`GliomaMTLLib.train.run_model`)."""
    if isinstance(model, ModelBundle):
        return model
    from GliomaMTLLib.train.run_model import is_run_folder, run_bundle  # light: recipe and weights only

    if is_run_folder(model):
        return run_bundle(model)
    return load_bundle(model)


def _sequence_roles(bundle: ModelBundle) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(required, optional)`` sequences: ``model.json`` ``required_sequences`` (default: all of
    ``sequences``) and the rest of ``sequences``, in channel order.

    Raises:
        BundleError: ``required_sequences`` / ``optional_sequences`` name a sequence that is not an input channel.
    """
    channels = bundle.sequences
    required = bundle.meta.get("required_sequences")
    optional = bundle.meta.get("optional_sequences")
    required = tuple(channels) if required is None else tuple(str(s) for s in required)
    optional = tuple(s for s in channels if s not in required) if optional is None else tuple(str(s) for s in optional)
    where = f"{bundle.folder / 'model.json'}"
    unknown = [s for s in (*required, *optional) if s not in channels]
    if unknown or not required or set(required) & set(optional) or set(required) | set(optional) != set(channels):
        raise BundleError(
            f"{where}: required_sequences {list(required)} and optional_sequences {list(optional)} must split the "
            f"input sequences {list(channels)} (at least one required)"
        )
    return tuple(s for s in channels if s in required), tuple(s for s in channels if s in optional)


def _absent_warning(absent: "list[str]", model: str) -> str:
    """The warning for optional sequences the case lacks."""
    from GliomaMTLLib.labels import SEQUENCE_TITLES

    names = ", ".join(f"{s} ({SEQUENCE_TITLES.get(s, s)})" for s in absent)
    return (
        f"missing sequence(s) {names}: model {model} ran without them (filled with zeros after normalisation, "
        "as its training's sequence dropout did); expect lower accuracy, see the model card's Dice per sequence subset"
    )


def resolve_tta(setting: bool | str, device: torch.device) -> bool:
    """Whether test-time flips run: ``setting`` True/False, or ``"gpu"`` (on when ``device`` is a GPU).

    Raises:
        ValueError: any other value.
    """
    setting = check_tta(setting)
    return device.type == "cuda" if setting == TTA_ON_GPU else bool(setting)


#: Test-time flips: mirror images along z, y and x (each alone) of a (N, C, z, y, x) window.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((2,), (3,), (4,))


def _flip_average(runner: Any, x: "torch.Tensor", probs: "torch.Tensor") -> "torch.Tensor":
    """Mean of ``probs`` (softmax of ``x``) and the softmax of each mirror image of ``x`` flipped back."""
    total = probs.clone()
    for dims in TTA_FLIPS:
        seg, _ = runner(torch.flip(x, dims).contiguous(), False)
        total += torch.flip(torch.softmax(seg.float(), dim=1), dims)
    return total / (1 + len(TTA_FLIPS))


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str) -> "_Timer":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self._stage] = self.timings.get(self._stage, 0.0) + time.perf_counter() - self._t0


class Predictor:
    """Runs a model bundle on cases: segmentation, region probabilities, genotype, volumes.

    Args:
        model: bundle name (on :func:`GliomaMTLLib.bundle.model_search_path`), folder, or a loaded
            :class:`ModelBundle`. Loading checks the weights' sha256.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        amp: mixed precision (autocast, bfloat16 or float16) on a GPU; ignored on the CPU.
        num_threads: CPU threads (default: all physical cores).
        engine: ``"auto"`` (ONNX Runtime on the CPU when installed, else PyTorch), ``"torch"`` or
            ``"onnx"``; see :mod:`GliomaMTLLib.inference.engines`.
        postprocess: overrides of the bundle's ``"postprocess"`` settings (``et_min_ml``,
            ``min_component_ml``, ``et_min_confidence``, ``et_confidence_max_ml``).
        networks: stage -> network to use instead of the bundle's weights (tests, experiments).
        progress: callback ``(fraction, message)``.
        tta: test-time flips for the main stage's segmentation (the softmax averaged over the
            window and its mirror images along each axis: 4 network passes per window): True, False,
            ``"gpu"`` (on a GPU only, where the passes cost little) or None: ``model.json`` ``"tta"``
            (default off). Genotype logits come from the unflipped pass.
        decoding: how class probabilities become labels, instead of ``model.json`` ``"decoding"``
            (default the argmax); see :mod:`GliomaMTLLib.inference.decoding`.

    Raises:
        BundleError: missing, corrupt or inconsistent bundle.
        DeviceError: CUDA requested but not available.
    """

    def __init__(
        self,
        model: str | Path | ModelBundle = DEFAULT_MODEL,
        *,
        device: str | torch.device = "auto",
        amp: bool = True,
        num_threads: int | None = None,
        engine: str = "auto",
        postprocess: Mapping[str, Any] | None = None,
        networks: Mapping[str, torch.nn.Module] | None = None,
        progress: ProgressCallback | None = None,
        tta: bool | str | None = None,
        decoding: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.bundle = _load_model(model)
        self.required_sequences, self.optional_sequences = _sequence_roles(self.bundle)
        meta_path = self.bundle.folder / "model.json"
        if "main" not in self.bundle.stages:
            raise BundleError(f"{meta_path}: no 'main' stage (stages: {list(self.bundle.stages)})")
        unknown = set(self.bundle.stages) - {"main", "localizer"}
        if unknown:
            raise BundleError(f"{meta_path}: unknown stage(s) {sorted(unknown)}; expected 'localizer' and 'main'")
        self.main = _parse_stage(self.bundle, "main")
        self.localizer = _parse_stage(self.bundle, "localizer") if "localizer" in self.bundle.stages else None
        self.label_names = self.bundle.labels
        expected = list(range(1, self.main.network.num_seg_classes))
        if sorted(self.label_names) != expected:
            raise BundleError(
                f"{meta_path}: labels {sorted(self.label_names)} do not match the main network's "
                f"{self.main.network.num_seg_classes} seg classes (expected labels {expected})"
            )
        self.regions = regions_for_labels(self.label_names, self.bundle.meta.get("regions"))
        self.tasks = self.bundle.tasks
        path_tasks = {t for p in self.bundle.meta.get("genotype_paths") or [] if isinstance(p, dict)
                      for t in (p.get("tasks") or {})}
        uncovered = set(self.tasks) - set(self.main.network.tasks) - path_tasks
        if uncovered:
            raise BundleError(f"{meta_path}: tasks {sorted(uncovered)} have no head in the main network "
                              "and no genotype path")
        self.temperatures = _temperatures(self.bundle)
        try:
            self.decoding = Decoding.from_dict(decoding if decoding is not None else self.bundle.meta.get("decoding"))
            self.decoding.check_regions(self.regions)
        except ValueError as exc:
            raise (ValueError(f"decoding argument: {exc}") if decoding is not None
                   else BundleError(f"{meta_path}: {exc}")) from exc
        try:
            self.tta = resolve_tta(self.bundle.meta.get("tta", False) if tta is None else tta, self.device)
        except ValueError as exc:
            raise (ValueError(f"tta argument: {exc}") if tta is not None else BundleError(f"{meta_path}: {exc}")) from exc
        try:
            self.postprocess_config = PostprocessConfig.from_dict(self.bundle.meta.get("postprocess")).updated(postprocess)
        except ValueError as exc:
            raise BundleError(f"{meta_path}: {exc}") from exc
        self.amp = amp
        threads = configure_cpu_threads(num_threads) if self.device.type == "cpu" else 1
        # Injected networks (tests, experiments, a run being evaluated) always run in PyTorch.
        self.engine = resolve_engine(engine, self.device) if networks is None else "torch"
        self._networks: dict[str, torch.nn.Module] | None = None
        if networks is not None:
            self._networks = {name: net.to(self.device).eval() for name, net in networks.items()}
            for stage in self.bundle.stages:
                if stage not in self._networks:
                    raise BundleError(f"no network for stage {stage!r}")
        self.runners: dict[str, TorchRunner | OnnxRunner] = {}
        for stage in self.bundle.stages:
            self.runners[stage] = self._make_runner(stage, threads)
        self._cpu_runners: dict[str, TorchRunner] = {}
        self.progress = progress
        # The one "main window -> task logits" function: genotype probabilities here, and explanations
        # (GliomaMTLLib.explain), go through it; its network is built only when a gradient is needed.
        self.task_logits: TaskLogits = build_task_logits(
            self.bundle.meta, lambda: self.networks["main"], self.tasks, self.temperatures, self.regions)
        #: Box (on the main preprocessed grid) of the last genotype window; GliomaMTLLib.explain reads it.
        self.genotype_window: CropBox | None = None

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        """Stage -> PyTorch network (eval mode, on :attr:`device`), built from the bundle's weights on
        first use: a prediction whose ONNX export is cached never builds them (nor imports MONAI)."""
        if self._networks is None:
            self._networks = {n: net.to(self.device).eval() for n, net in self.bundle.build_networks(self.device).items()}
        return self._networks

    def _make_runner(self, stage: str, threads: int) -> TorchRunner | OnnxRunner:
        if self.engine != "onnx":
            return TorchRunner(self.networks[stage])
        spec = self.main if stage == "main" else self.localizer
        assert spec is not None
        tasks = list(spec.network.tasks)
        # The weights' sha256 and the architecture (model.json could change e.g. an activation
        # slope without changing the tensors) identify the export.
        arch = json.dumps(spec.network.to_dict(), sort_keys=True)
        key = f"{stage}-{hashlib.sha256((self.model_info['sha256'] + arch).encode()).hexdigest()[:20]}"
        try:
            return onnx_runner(lambda: self.networks[stage], key, spec.network.in_channels,
                               spec.network.size_multiple, tasks, threads)
        except Exception as exc:  # noqa: BLE001 - PyTorch always works
            logger.warning("ONNX Runtime unavailable for stage %s (%s); using PyTorch", stage, exc)
            return TorchRunner(self.networks[stage])

    # ------------------------------------------------------------------ public

    @property
    def sequences(self) -> tuple[str, ...]:
        return self.bundle.sequences

    @property
    def model_info(self) -> dict[str, Any]:
        """The model as ``report.json`` names it, with the settings that shaped its labels."""
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "sha256": str(self.bundle.meta["weights"].get("sha256", "")),
            "folder": str(self.bundle.folder),
            "test_time_flips": self.tta,
            "decoding": self.decoding.to_dict(),
        }

    def read(self, source: Any, case_id: str | None = None) -> Case:
        """Read a case (folder, file list or mapping) with the sequences this model needs.

        Every sequence present is read (the first of t1n, t1c, t2w, t2f gives the output grid,
        whichever sequences the model uses); a label map in the folder is not (prediction does
        not need it: about 0.3 s saved on a BraTS-size case).

        Raises:
            CaseInputError subclasses naming the file and the problem (missing sequence, ...).
        """
        from GliomaMTLLib.io.layout import unrecognized_note
        from GliomaMTLLib.io.readers import read_case, resolve_case_files
        from GliomaMTLLib.labels import SEQUENCES

        files, default_id, folder = resolve_case_files(source, labels=False)  # label maps are not read
        images = {key: path for key, path in files.items() if key in SEQUENCES}
        missing = [s for s in self.required_sequences if s not in images]
        if missing:
            where = f"folder {folder}" if folder is not None else "the given files"
            raise MissingSequenceError(
                f"model {self.bundle.name} needs sequence(s) {missing}, not found in {where} "
                f"(found: {[Path(p).name for p in files.values()] or 'no image files'})"
                + (f"; only {', '.join(self.optional_sequences)} may be missing" if self.optional_sequences else "")
                + unrecognized_note(folder),  # files whose names say nothing: how to pass them
                [folder] if folder is not None else list(files.values()),
            )
        return read_case(images, case_id=case_id or default_id, required=self.required_sequences)

    def predict_files(self, source: Any, case_id: str | None = None) -> Prediction:
        """:meth:`read` then :meth:`predict`; the ``read`` time is included in the timings."""
        t0 = time.perf_counter()
        case = self.read(source, case_id=case_id)
        read_s = time.perf_counter() - t0
        prediction = self.predict(case)
        prediction.timings = {"read": read_s, **prediction.timings}
        return prediction

    def predict(self, case: Case) -> Prediction:
        """Run the whole pipeline on ``case``; every output lies on ``case.geometry``.

        Raises:
            MissingSequenceError: the case lacks a sequence the model needs.
        """
        missing = [s for s in self.required_sequences if s not in case.images]
        if missing:
            raise MissingSequenceError(
                f"case {case.case_id}: model {self.bundle.name} needs sequence(s) {missing}, "
                f"the case has {list(case.sequences)}"
                + (f" (only {', '.join(self.optional_sequences)} may be missing)" if self.optional_sequences else ""),
                [case.sources[s] for s in case.sequences if s in case.sources],
            )
        timer = _Timer()
        warnings = list(getattr(case, "warnings", []) or [])
        absent = [s for s in self.sequences if s not in case.images]  # optional ones only (checked above)
        if absent:
            warnings.append(_absent_warning(absent, self.bundle.name))
        self._report(0.05, "preprocessing")
        with timer("preprocess"):
            # all sequences present, not only the model's: a FLAIR-only model fed a T2 is caught too
            warnings += input_warnings(case.images, case.geometry)
            pre_main = preprocess(case, self.sequences, self.main.preprocess, fill_missing=absent)
            # genotype paths: the window's place in the brain, and the patient's age when known
            self.task_logits.set_context(pre=pre_main, age=getattr(case, "age_years", None))
            pre_loc = (
                preprocess(case, self.sequences, self.localizer.preprocess, fill_missing=absent)
                if self.localizer is not None else None
            )

        tumor_box = None
        if self.localizer is not None:
            self._report(0.15, "locating the tumor")
            with timer("localize"):
                assert pre_loc is not None
                tumor_box = self._with_fallback(lambda dev, _: self._localize(pre_loc, pre_main, dev), warnings, "localizer")

        self._report(0.3, "segmenting and classifying")
        with timer("main"):
            main_out = self._with_fallback(
                lambda dev, small: self._run_main(pre_main, tumor_box, dev, small), warnings, "main"
            )
        probs, box, logits, windows, found = main_out
        core_lesions = self._core_lesions(probs, pre_main)

        self._report(0.85, "resampling to the input grid")
        with timer("resample"):
            labels, region_probs = self._to_input_grid(probs, box, pre_main.record)

        with timer("postprocess"):
            et_region = next((n for n, m in self.regions.items() if tuple(m) == (ET,)), None)
            labels, notes = apply_postprocess(labels, self.label_names, case.geometry.voxel_volume_ml, self.postprocess_config,
                                              brain_image=case.images[case.sequences[0]],  # grid reference's brain
                                              et_probability=region_probs.box_values(et_region) if et_region else None,
                                              et_probability_box=region_probs.slices)
            volumes = volumes_ml(labels, self.label_names, self.regions, case.geometry.voxel_volume_ml)
            genotype = self._genotype(logits)
        warnings += notes
        ood = ood_warning(self.task_logits, core_lesions) if genotype else None  # unlike the training data (G)
        if ood:
            warnings.append(ood)
        age_entries, age_notes = age_status(self.task_logits, getattr(case, "age_years", None)) if genotype else ({}, [])
        warnings += age_notes
        meta = ({**self.bundle.meta, "genotype_status": {**(self.bundle.meta.get("genotype_status") or {}), **age_entries}}
                if age_entries else self.bundle.meta)
        if not found or not labels.any():
            warnings.insert(
                0,
                "no tumor found" + (": genotype probabilities are not meaningful" if genotype else ""),
            )
        tumor: dict[str, Any] = {"found": bool(found and labels.any()), "windows": windows, "center_mm": None,
                                 "core_lesions": core_lesions}
        if tumor["found"]:  # centre of mass of the whole tumor, LPS mm
            # on the tumor's box: center_of_mass builds float64 index arrays of the whole input grid
            box = bounding_box(labels > 0)
            center = np.asarray(ndimage.center_of_mass(labels[box] > 0)) + [s.start for s in box]
            tumor["center_mm"] = [round(float(v), 2) for v in case.geometry.index_to_physical(center[::-1])[0]]
        self._report(1.0, "done")
        return Prediction(
            case_id=case.case_id,
            geometry=case.geometry,
            labels=labels,
            label_names=dict(self.label_names),
            probabilities=region_probs,
            genotype=genotype,
            volumes_ml=volumes,
            timings=timer.timings,
            warnings=warnings,
            model=self.model_info,
            device=f"{self.device} ({self.engine_used})",
            tumor=tumor,
            sources=dict(case.sources),
            genotype_calls=(withhold(genotype_calls(genotype, meta, self.tasks), ood) if ood
                            else genotype_calls(genotype, meta, self.tasks)),  # card status per task
        )

    @property
    def engine_used(self) -> str:
        """Engine(s) running the stages: ``torch`` or ``onnxruntime`` (or both after a fallback)."""
        names = {"onnxruntime" if isinstance(r, OnnxRunner) else "torch" for r in self.runners.values()}
        return "+".join(sorted(names))

    # ------------------------------------------------------------------ stages

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(fraction, message)

    def _runner(self, stage: str, device: torch.device) -> TorchRunner | OnnxRunner:
        if device == self.device:
            return self.runners[stage]
        if stage not in self._cpu_runners:  # after a GPU out-of-memory error
            self._cpu_runners[stage] = TorchRunner(copy.deepcopy(self.networks[stage]).to(device).float().eval())
        return self._cpu_runners[stage]

    def _with_fallback(self, run: Callable[[torch.device, bool], Any], warnings: list[str], stage: str) -> Any:
        """Run ``run(device, small_windows)``; on GPU out-of-memory retry with smaller windows, then on the CPU."""
        attempts = [(self.device, False)]
        if self.device.type == "cuda":
            attempts += [(self.device, True), (torch.device("cpu"), False)] if stage == "main" else [(torch.device("cpu"), False)]
        for i, (device, small) in enumerate(attempts):
            try:
                return run(device, small)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(exc) or i == len(attempts) - 1:
                    raise
                release_gpu_memory()
                nxt_device, nxt_small = attempts[i + 1]
                how = "with smaller windows" if nxt_small else f"on the {nxt_device.type.upper()}"
                warnings.append(f"GPU out of memory in the {stage} stage; retried {how} (slower)")
        raise AssertionError("unreachable")

    def _forward(
        self, stage: str, image: np.ndarray, device: torch.device, with_genotype: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One window (C, z, y, x) through a stage's network: (softmax (L, z, y, x) float32, logits)."""
        runner = self._runner(stage, device)
        x = torch.from_numpy(np.ascontiguousarray(image[None])).to(device)
        with inference_context(device, self.amp):
            seg, genotype = runner(x, with_genotype)
            if with_genotype and stage == "main" and (genotype or self.task_logits.paths):
                self.task_logits.set_context(window=self.genotype_window)
                genotype = self.task_logits.combine(x, seg, genotype)
            probs = torch.softmax(seg.float(), dim=1)
            if self.tta and stage == "main":
                probs = _flip_average(runner, x, probs)
            probs = probs[0].cpu().numpy()
            logits = {t: v.float()[0].cpu().numpy() for t, v in genotype.items()}
        return probs, logits

    def _sliding(self, stage: str, image: np.ndarray, window: tuple[int, ...], device: torch.device) -> np.ndarray:
        """Softmax probabilities (L, z, y, x) of ``image`` (C, z, y, x) from overlapping windows."""
        spec = self.main if stage == "main" else self.localizer
        assert spec is not None
        runner = self._runner(stage, device)

        def seg(x: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(runner(x, False)[0].float(), dim=1)
            if self.tta and stage == "main":
                probs = _flip_average(runner, x, probs)
            return probs.to(x.device)

        x = torch.from_numpy(np.ascontiguousarray(image[None])).to(device)
        with inference_context(device, self.amp):
            out = sliding_window_probs(x, window, seg, overlap=float(spec.option("overlap", 0.25)),
                                       batch_size=int(spec.option("sw_batch_size", 1)))
        return out[0].float().cpu().numpy()

    def _localize(self, pre_loc: Preprocessed, pre_main: Preprocessed, device: torch.device) -> np.ndarray | None:
        """Tumor box on the main stage's preprocessed grid, ``[[z0, y0, x0], [z1, y1, x1]]`` (continuous
        voxel bounds), or None when the localizer sees no tumor."""
        spec = self.localizer
        assert spec is not None
        probs, box, _, _ = self._whole(spec, pre_loc.image, device, with_genotype=False)
        p_wt = uncrop(1.0 - probs[0], box, pre_loc.image.shape[1:])
        mask = (p_wt >= float(spec.option("threshold", 0.5))) & pre_loc.brain_mask
        if not mask.any():
            return None
        components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = sizes >= float(spec.option("keep_fraction", 0.1)) * sizes.max()
        keep[0] = False
        slices = bounding_box(keep[components])
        # Outer faces of the box (voxel bounds) -> physical -> main grid continuous indices.
        lo = np.array([s.start for s in slices], dtype=float) - 0.5
        hi = np.array([s.stop for s in slices], dtype=float) - 0.5
        corners_zyx = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        physical = pre_loc.geometry.index_to_physical(corners_zyx[:, ::-1])
        on_main = physical_to_continuous_index(pre_main.geometry, physical)[:, ::-1]
        # Grown by margin_mm plus one localizer voxel: a coarse border voxel only partly in the
        # tumor can fall below the threshold, so the box is only known to within one such voxel.
        margin_mm = float(spec.option("margin_mm", 8.0)) + np.asarray(pre_loc.geometry.spacing[::-1])
        margin = margin_mm / np.asarray(pre_main.geometry.spacing[::-1])
        return np.stack([on_main.min(axis=0) - margin, on_main.max(axis=0) + margin])

    def _whole(
        self, spec: StageSpec, image: np.ndarray, device: torch.device, with_genotype: bool, small: bool = False
    ) -> tuple[np.ndarray, CropBox, dict[str, np.ndarray], int]:
        """A stage on the whole preprocessed brain: (softmax (L, *box.size), box on the image grid,
        genotype logits, windows). The brain is resized to the window (``resize_to``), or centred in
        one window, or (larger than the window, or ``small``) covered by sliding windows."""
        shape = np.asarray(image.shape[1:])
        if spec.resize_to:
            from monai.transforms import Resize  # as in training (paper 001's resize to 144^3)

            x = np.asarray(Resize(spec.window, mode="trilinear")(image), dtype=np.float32)
            probs, logits = self._forward(spec.name, x, device, with_genotype)
            probs = np.asarray(Resize(tuple(int(v) for v in shape), mode="trilinear")(probs), dtype=np.float32)
            return probs, CropBox.full(shape), logits, 1
        if np.all(shape <= spec.window) and not small:
            x, box = crop_around(image, (shape - 1) / 2.0, spec.window)
            self.genotype_window = box if with_genotype else self.genotype_window
            probs, logits = self._forward(spec.name, x, device, with_genotype)
            return probs, box, logits, 1
        return self._windows(spec, image, CropBox.full(shape), None, device, with_genotype, small)

    def _windows(
        self,
        spec: StageSpec,
        image: np.ndarray,
        region: CropBox,
        center: np.ndarray | None,
        device: torch.device,
        with_genotype: bool,
        small: bool,
    ) -> tuple[np.ndarray, CropBox, dict[str, np.ndarray], int]:
        """Sliding windows over ``region`` of ``image``; genotype from one window centred on
        ``center`` (None: on the largest tumor component found, else the region centre)."""
        window = spec.window
        if small:  # after a GPU out-of-memory error
            m = spec.network.size_multiple
            window = tuple(int(max(m, (v // 2) // m * m)) for v in spec.window)  # type: ignore[assignment]
        overlap = float(spec.option("overlap", 0.25))
        probs = self._sliding(spec.name, crop(image, region), window, device)
        n_windows = int(np.prod([max(1, int(np.ceil((r - w) / (w * (1 - overlap))))) + 1
                                 for r, w in zip(region.size, window)]))
        logits: dict[str, np.ndarray] = {}
        if with_genotype:
            if center is None:
                center = (np.asarray(region.size) - 1) / 2.0
                tumor = probs[0] < 0.5
                if tumor.any():
                    components, _ = ndimage.label(tumor, structure=np.ones((3, 3, 3), dtype=bool))
                    sizes = np.bincount(components.ravel())
                    sizes[0] = 0
                    sl = bounding_box(components == int(np.argmax(sizes)))
                    center = np.array([(s.start + s.stop - 1) / 2.0 for s in sl])
                center = center + np.asarray(region.start)
            x, self.genotype_window = crop_around(image, center, spec.window)
            logits = self._forward(spec.name, x, torch.device("cpu") if small else device, True)[1]
            n_windows += 1
        return probs, region, logits, n_windows

    def _core_lesions(self, probs: np.ndarray, pre: Preprocessed) -> int | None:
        """Separate tumor cores in the main stage's probabilities (None for a model without a
        tumor core region, e.g. whole tumor only)."""
        core = self.regions.get("TC")
        if not core or len(core) >= len(self.label_names):
            return None
        voxel_ml = float(np.prod(pre.geometry.spacing)) / 1000.0
        return core_lesion_count(probs, core, voxel_ml)

    @property
    def wants_genotype_window(self) -> bool:
        """Whether the main stage runs a genotype window (the model has genotype tasks)."""
        return bool(self.tasks)

    def _run_main(
        self, pre: Preprocessed, tumor_box: np.ndarray | None, device: torch.device, small: bool
    ) -> tuple[np.ndarray, CropBox, dict[str, np.ndarray], int, bool]:
        """Main stage: (softmax (L, *box.size), box on the preprocessed grid, genotype logits,
        number of windows, tumor found)."""
        spec = self.main
        with_genotype = self.wants_genotype_window
        if spec.mode == "crop" and tumor_box is not None:
            lo, hi = tumor_box
            extent, center = hi - lo, (lo + hi) / 2.0
            if np.all(extent <= spec.window) and not small:
                x, box = crop_around(pre.image, center, spec.window)
                self.genotype_window = box
                probs, logits = self._forward("main", x, device, with_genotype)
                return probs, box, logits, 1, True
            # Several windows over the tumor box (at least one window large).
            size = np.maximum(np.ceil(extent).astype(int), spec.window)
            start = np.floor(center + 0.5).astype(int) - size // 2
            region = CropBox(tuple(int(v) for v in start), tuple(int(v) for v in size))  # type: ignore[arg-type]
            probs, box, logits, n = self._windows(spec, pre.image, region, center, device, with_genotype, small)
            return probs, box, logits, n, True
        if spec.mode == "whole":
            probs, box, logits, n = self._whole(spec, pre.image, device, with_genotype, small)
        else:  # sliding, or a crop model whose localizer found nothing: windows over the whole brain
            full = CropBox.full(pre.image.shape[1:])
            probs, box, logits, n = self._windows(spec, pre.image, full, None, device, with_genotype, small)
        return probs, box, logits, n, bool((probs[0] < 0.5).any())

    def _to_input_grid(
        self, probs: np.ndarray, box: CropBox, record: SpatialRecord
    ) -> tuple[np.ndarray, BoxedVolumes]:
        """Label map and region probabilities on the input grid from the window probabilities.

        Only the part of the input grid the window covers is interpolated and kept (the region
        probabilities as a :class:`BoxedVolumes`): outside it every voxel is background.
        """
        shape = record.input_geometry.shape
        labels = np.zeros(shape, dtype=np.uint8)
        sub = window_record(record, box)
        if sub is None:
            empty = (slice(0, 0),) * 3
            return labels, BoxedVolumes(shape, empty, {n: np.zeros((0, 0, 0), np.float32) for n in self.regions})
        sub_record, local = sub
        # Foreground probabilities only: outside the window they are 0 (background 1), the fill.
        fg, where = to_input_box(probs[(slice(1, None), *local)], sub_record, "scalar", 0.0)
        total = fg.sum(axis=0)
        labels[where] = self.decoding.labels(fg)
        regions: dict[str, np.ndarray] = {}
        for name, members in self.regions.items():
            if len(members) == fg.shape[0]:
                value = total
            else:
                value = fg[members[0] - 1].copy()
                for m in members[1:]:
                    value += fg[m - 1]
            regions[name] = np.clip(value, 0.0, 1.0, out=value)
        return labels, BoxedVolumes(shape, where, regions)

    def _genotype(self, logits: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for task, classes in self.tasks.items():
            if task not in logits:
                continue
            p = self.task_logits.probabilities({task: logits[task][None]})[task][0].numpy()
            out[task] = {name: float(v) for name, v in zip(classes, p)}
        return out
