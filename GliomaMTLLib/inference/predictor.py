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
      windows (``monai.inferers.sliding_window_inference``, Gaussian blending) and the genotype
      comes from the window centred on the tumor. When the localizer finds nothing, windows
      cover the whole brain as in ``sliding``.
    - ``sliding`` (default without a localizer): windows over the whole brain; the genotype
      window is centred on the largest tumor component the main network found.
    - ``whole``: the whole brain centred in one ``input_size`` window, or resized (trilinear) to
      ``resize_to`` and the probabilities resized back (paper 001's fixed 144^3 input).

The softmax label probabilities of the main window(s) go back to the input grid with
:func:`GliomaMTLLib.preprocess.to_input_grid` (linear; exact indexing when the preprocessing did
not resample), applied to the window's part of the preprocessed grid only; outside it every
voxel is background. The label map is the arg-max on the input grid, then post-processed
(:mod:`GliomaMTLLib.inference.postprocess`). Genotype probabilities are ``softmax(logits / T)``
with ``model.json`` ``"calibration"`` ``{task: T}`` (or ``{task: {"temperature": T}}``).
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
from monai.inferers import sliding_window_inference
from scipy import ndimage

from GliomaMTLLib.bundle import BundleError, ModelBundle, load_bundle
from GliomaMTLLib.inference.checks import input_warnings
from GliomaMTLLib.inference.engines import OnnxRunner, TorchRunner, onnx_runner, resolve_engine
from GliomaMTLLib.inference.device import (
    configure_cpu_threads,
    inference_context,
    is_out_of_memory,
    release_gpu_memory,
    resolve_device,
)
from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess, regions_for_labels, volumes_ml
from GliomaMTLLib.inference.prediction import Prediction
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.validation import MissingSequenceError
from GliomaMTLLib.metrics import apply_temperature
from GliomaMTLLib.nets import NetConfig
from GliomaMTLLib.preprocess import (
    CropBox,
    PreprocessConfig,
    Preprocessed,
    SpatialRecord,
    bounding_box,
    crop,
    crop_around,
    physical_to_continuous_index,
    preprocess,
    to_input_grid,
    uncrop,
)

logger = logging.getLogger(__name__)
ProgressCallback = Callable[[float, str], None]
DEFAULT_MODEL = "gliomamtl_adult"


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


def _sub_record(record: SpatialRecord, box: CropBox) -> tuple[SpatialRecord, tuple[slice, ...]] | None:
    """The record of the part of the preprocessed grid inside ``box`` (a box on that grid that may
    leave it), and the slices of ``box``'s array holding that part; None if they do not meet."""
    inner = []
    local = []
    for a, b, n in zip(box.start, box.stop, record.crop.size):
        lo, hi = max(a, 0), min(b, n)
        if lo >= hi:
            return None
        inner.append((lo, hi))
        local.append(slice(lo - a, hi - a))
    start = tuple(record.crop.start[i] + inner[i][0] for i in range(3))
    size = tuple(hi - lo for lo, hi in inner)
    sub = SpatialRecord(
        record.input_geometry,
        record.reorientation,
        record.reoriented_geometry,
        record.resampled_geometry,
        CropBox(start, size),  # type: ignore[arg-type]
    )
    return sub, tuple(local)


def _input_slices(record: SpatialRecord) -> tuple[slice, slice, slice]:
    """Slices (z, y, x) of the input grid that can receive values from ``record``'s crop."""
    corners = physical_to_continuous_index(record.input_geometry, record.geometry.corners())
    size = np.asarray(record.input_geometry.size)
    lo = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, 0, size)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1]))  # type: ignore[return-value]


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
            ``min_component_ml``).
        networks: stage -> network to use instead of the bundle's weights (tests, experiments).
        progress: callback ``(fraction, message)``.

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
    ) -> None:
        self.device = resolve_device(device)
        self.bundle = model if isinstance(model, ModelBundle) else load_bundle(model)
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
        missing_heads = set(self.tasks) - set(self.main.network.tasks)
        if missing_heads:
            raise BundleError(f"{meta_path}: tasks {sorted(missing_heads)} have no head in the main network")
        self.temperatures = _temperatures(self.bundle)
        try:
            self.postprocess_config = PostprocessConfig.from_dict(self.bundle.meta.get("postprocess")).updated(postprocess)
        except ValueError as exc:
            raise BundleError(f"{meta_path}: {exc}") from exc
        self.amp = amp
        threads = configure_cpu_threads(num_threads) if self.device.type == "cpu" else 1
        # Injected networks (tests, experiments) always run in PyTorch.
        self.engine = resolve_engine(engine, self.device) if networks is None else "torch"
        if networks is None:
            networks = self.bundle.build_networks(self.device)
        self.networks = {name: net.to(self.device).eval() for name, net in networks.items()}
        for stage in self.bundle.stages:
            if stage not in self.networks:
                raise BundleError(f"no network for stage {stage!r}")
        self.runners: dict[str, TorchRunner | OnnxRunner] = {}
        for stage, net in self.networks.items():
            self.runners[stage] = self._make_runner(stage, net, threads)
        self._cpu_runners: dict[str, TorchRunner] = {}
        self.progress = progress

    def _make_runner(self, stage: str, net: torch.nn.Module, threads: int) -> TorchRunner | OnnxRunner:
        if self.engine != "onnx":
            return TorchRunner(net)
        spec = self.main if stage == "main" else self.localizer
        assert spec is not None
        tasks = list(spec.network.tasks)
        # The weights' sha256 and the architecture (model.json could change e.g. an activation
        # slope without changing the tensors) identify the export.
        arch = json.dumps(spec.network.to_dict(), sort_keys=True)
        key = f"{stage}-{hashlib.sha256((self.model_info['sha256'] + arch).encode()).hexdigest()[:20]}"
        try:
            return onnx_runner(net, key, spec.network.in_channels, spec.network.size_multiple, tasks, threads)
        except Exception as exc:  # noqa: BLE001 - PyTorch always works
            logger.warning("ONNX Runtime unavailable for stage %s (%s); using PyTorch", stage, exc)
            return TorchRunner(net)

    # ------------------------------------------------------------------ public

    @property
    def sequences(self) -> tuple[str, ...]:
        return self.bundle.sequences

    @property
    def model_info(self) -> dict[str, str]:
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "sha256": str(self.bundle.meta["weights"].get("sha256", "")),
            "folder": str(self.bundle.folder),
        }

    def read(self, source: Any, case_id: str | None = None) -> Case:
        """Read a case (folder, file list or mapping) with the sequences this model needs.

        Every sequence present is read (the first of t1n, t1c, t2w, t2f gives the output grid,
        whichever sequences the model uses); a label map in the folder is not (prediction does
        not need it: about 0.3 s saved on a BraTS-size case).

        Raises:
            CaseInputError subclasses naming the file and the problem (missing sequence, ...).
        """
        from GliomaMTLLib.io.readers import read_case, resolve_case_files
        from GliomaMTLLib.labels import SEQUENCES

        files, default_id, folder = resolve_case_files(source)
        images = {key: path for key, path in files.items() if key in SEQUENCES}
        missing = [s for s in self.sequences if s not in images]
        if missing:
            where = f"folder {folder}" if folder is not None else "the given files"
            raise MissingSequenceError(
                f"model {self.bundle.name} needs sequence(s) {missing}, not found in {where} "
                f"(found: {[Path(p).name for p in files.values()] or 'no image files'})",
                [folder] if folder is not None else list(files.values()),
            )
        return read_case(images, case_id=case_id or default_id, required=self.sequences)

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
        missing = [s for s in self.sequences if s not in case.images]
        if missing:
            raise MissingSequenceError(
                f"case {case.case_id}: model {self.bundle.name} needs sequence(s) {missing}, "
                f"the case has {list(case.sequences)}",
                [case.sources[s] for s in case.sequences if s in case.sources],
            )
        timer = _Timer()
        warnings = list(getattr(case, "warnings", []) or [])
        self._report(0.05, "preprocessing")
        with timer("preprocess"):
            # all sequences present, not only the model's: a FLAIR-only model fed a T2 is caught too
            warnings += input_warnings(case.images, case.geometry)
            pre_main = preprocess(case, self.sequences, self.main.preprocess)
            pre_loc = (
                preprocess(case, self.sequences, self.localizer.preprocess) if self.localizer is not None else None
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

        self._report(0.85, "resampling to the input grid")
        with timer("resample"):
            labels, region_probs = self._to_input_grid(probs, box, pre_main.record)

        with timer("postprocess"):
            labels, notes = apply_postprocess(labels, self.label_names, case.geometry.voxel_volume_ml, self.postprocess_config)
            volumes = volumes_ml(labels, self.label_names, self.regions, case.geometry.voxel_volume_ml)
            genotype = self._genotype(logits)
        warnings += notes
        if not found or not labels.any():
            warnings.insert(
                0,
                "no tumor found" + (": genotype probabilities are not meaningful" if genotype else ""),
            )
        tumor: dict[str, Any] = {"found": bool(found and labels.any()), "windows": windows, "center_mm": None}
        if tumor["found"]:  # centre of mass of the whole tumor, LPS mm
            center = np.asarray(ndimage.center_of_mass(labels > 0))
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
            probs = torch.softmax(seg.float(), dim=1)[0].cpu().numpy()
            logits = {t: v.float()[0].cpu().numpy() for t, v in genotype.items()}
        return probs, logits

    def _sliding(self, stage: str, image: np.ndarray, window: tuple[int, ...], device: torch.device) -> np.ndarray:
        """Softmax probabilities (L, z, y, x) of ``image`` (C, z, y, x) from overlapping windows."""
        spec = self.main if stage == "main" else self.localizer
        assert spec is not None
        runner = self._runner(stage, device)

        def seg(x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(runner(x, False)[0].float(), dim=1).to(x.device)

        x = torch.from_numpy(np.ascontiguousarray(image[None])).to(device)
        with inference_context(device, self.amp):
            out = sliding_window_inference(
                x,
                roi_size=window,
                sw_batch_size=int(spec.option("sw_batch_size", 1)),
                predictor=seg,
                overlap=float(spec.option("overlap", 0.25)),
                mode="gaussian",
            )
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
            x, _ = crop_around(image, center, spec.window)
            logits = self._forward(spec.name, x, torch.device("cpu") if small else device, True)[1]
            n_windows += 1
        return probs, region, logits, n_windows

    def _run_main(
        self, pre: Preprocessed, tumor_box: np.ndarray | None, device: torch.device, small: bool
    ) -> tuple[np.ndarray, CropBox, dict[str, np.ndarray], int, bool]:
        """Main stage: (softmax (L, *box.size), box on the preprocessed grid, genotype logits,
        number of windows, tumor found)."""
        spec = self.main
        with_genotype = bool(self.tasks)
        if spec.mode == "crop" and tumor_box is not None:
            lo, hi = tumor_box
            extent, center = hi - lo, (lo + hi) / 2.0
            if np.all(extent <= spec.window) and not small:
                x, box = crop_around(pre.image, center, spec.window)
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
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Label map and region probabilities on the input grid from the window probabilities."""
        shape = record.input_geometry.shape
        labels = np.zeros(shape, dtype=np.uint8)
        regions = {name: np.zeros(shape, dtype=np.float32) for name in self.regions}
        sub = _sub_record(record, box)
        if sub is None:
            return labels, regions
        sub_record, local = sub
        # Foreground probabilities only: outside the window they are 0 (background 1), the fill.
        foreground = to_input_grid(probs[(slice(1, None), *local)], sub_record, "scalar", 0.0)
        where = _input_slices(sub_record)
        fg = foreground[(slice(None), *where)]
        total = fg.sum(axis=0)
        # argmax over (background = 1 - total, fg...) without stacking; ties go to the background
        best = fg.argmax(axis=0)
        best_p = np.take_along_axis(fg, best[None], axis=0)[0]
        labels[where] = np.where(best_p > 1.0 - total, best + 1, 0).astype(np.uint8)
        for name, members in self.regions.items():
            if len(members) == fg.shape[0]:
                value = total
            else:
                value = fg[members[0] - 1].copy()
                for m in members[1:]:
                    value += fg[m - 1]
            regions[name][where] = np.clip(value, 0.0, 1.0)
        return labels, regions

    def _genotype(self, logits: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for task, classes in self.tasks.items():
            if task not in logits:
                continue
            p = apply_temperature(logits[task][None], self.temperatures.get(task, 1.0))[0]
            out[task] = {name: float(v) for name, v in zip(classes, p)}
        return out
