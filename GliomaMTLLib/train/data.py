"""Data stage: which cases a recipe trains on, and their preprocessed arrays, cached on disk.

nnU-Net's pipeline, one explicit stage at a time::

    cases (synthetic phantoms made in-process, or a BraTS folder + clinical CSV)
      -> prepare: per case and per network stage, GliomaMTLLib.preprocess (reorient, resample to
         the stage's spacing, brain crop, z-score) [+ resize for paper 001], label on the same grid
      -> <cache>/<data>-<stage>-<key>/{<case>_image.npy, <case>_label.npy, <case>.json,
                                        spec.json, dataset.json}

The key hashes everything the arrays depend on (data source, sequences, preprocessing, resize),
so a rerun, or another recipe with the same preprocessing, reuses the arrays, a recipe with more
cases adds only the new ones, and a changed spacing makes a new folder. ``<case>.json`` (grid,
tumor centre, genotype, survival) is written after the case's arrays, so it marks a finished
case: an interrupted prepare resumes where it stopped. ``dataset.json`` indexes the folder.

Splits and label availability (paper 002) are applied when the prepared cases are loaded, not in
the cache: a seeded subset of the training cases loses its genotype labels and/or its expert mask
(it then trains the segmentation from a weak whole-tumor mask).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from GliomaMTLLib.io.atomic import atomic_path, write_text_atomic
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.train.config import fingerprint

PREPARE_VERSION = 1
SPLITS = ("train", "val", "test")
# Seed offsets of the synthetic splits, so that the train, validation and test phantoms never share a seed.
_SPLIT_SEED_OFFSET = {"train": 0, "val": 100_000, "test": 200_000}


# --------------------------------------------------------------------------------------------
# Which cases
# --------------------------------------------------------------------------------------------


@dataclass
class CaseSpec:
    """Where one case comes from; enough to rebuild it in a worker process.

    Attributes:
        case_id: subject id (folder name, or ``synth-<cohort>-<seed>``).
        split: ``train``, ``val`` or ``test``.
        seed, cohort, small: synthetic phantom parameters (``source == "synth"``).
        folder: the case folder (``source == "folder"``).
        clinical: the case's ``read_clinical_table`` record (folder source), or None.
        tabular: optional numeric vector (paper 002's SCNA embedding) from a CSV.
    """

    case_id: str
    split: str
    source: str
    seed: int | None = None
    cohort: str | None = None
    small: bool = False
    folder: str | None = None
    clinical: dict[str, Any] | None = None
    tabular: list[float] | None = None


def _read_id_map(conf: Mapping[str, Any]) -> dict[str, str]:
    """Case id -> clinical-table id from a mapping CSV (e.g. BraTS 2020's ``name_mapping.csv``)."""
    path = conf.get("csv")
    if not path:
        return {}
    case_col = conf.get("case_column") or "BraTS_2020_subject_ID"
    clin_col = conf.get("clinical_column") or "TCGA_TCIA_subject_ID"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.id_map.csv: {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (case_col, clin_col) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"data.id_map.csv {path}: column(s) {missing} not found (columns: {reader.fieldnames}); "
                "set data.id_map.case_column / clinical_column"
            )
        return {
            row[case_col].strip(): row[clin_col].strip()
            for row in reader
            if row.get(case_col, "").strip() and row.get(clin_col, "").strip() not in ("", "NA", "N/A")
        }


def _read_tabular(path: str | os.PathLike) -> dict[str, list[float]]:
    """case id -> numeric vector from a CSV whose first column is the case id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.tabular.csv: {path} does not exist")
    out: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for line, row in enumerate(reader, start=2):
            if not row or not row[0].strip():
                continue
            try:
                out[row[0].strip()] = [float(v) for v in row[1:]]
            except ValueError as exc:
                raise ValueError(f"data.tabular.csv {path}, line {line}: {exc}") from None
    return out


def _read_split_csv(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.split.csv: {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "case_id" not in reader.fieldnames or "split" not in reader.fieldnames:
            raise ValueError(f"data.split.csv {path}: needs columns case_id and split (train/val/test)")
        out = {}
        for row in reader:
            split = row["split"].strip().lower()
            if split not in SPLITS:
                raise ValueError(f"data.split.csv {path}: case {row['case_id']}: split {split!r} is not one of {SPLITS}")
            out[row["case_id"].strip()] = split
        return out


def list_case_specs(recipe: Mapping[str, Any]) -> list[CaseSpec]:
    """Every case of the recipe's data, with its split.

    Raises:
        FileNotFoundError: a folder or CSV named by the recipe is missing.
        ValueError: no case found, or a malformed CSV.
    """
    data = recipe["data"]
    if data["source"] == "synth":
        specs = []
        for split in SPLITS:
            for i in range(int(data[f"n_{split}"])):
                seed = int(data["seed"]) + _SPLIT_SEED_OFFSET[split] + i
                specs.append(
                    CaseSpec(
                        case_id=f"synth-{data['cohort']}-{seed:06d}", split=split, source="synth",
                        seed=seed, cohort=data["cohort"], small=bool(data["small"]),
                    )
                )
        return specs

    from GliomaMTLLib.io import list_case_folders, read_clinical_table

    root = Path(data["root"])
    folders = list_case_folders(root)
    if data["max_cases"]:
        folders = folders[: int(data["max_cases"])]
    if not folders:
        raise ValueError(f"data.root {root}: no case folders found")
    clinical_csv = data["clinical_csv"] or (root / "labels.csv" if (root / "labels.csv").is_file() else None)
    table = read_clinical_table(clinical_csv) if clinical_csv else {}
    id_map = _read_id_map(data["id_map"])
    tabular = _read_tabular(data["tabular"]["csv"]) if data["tabular"]["csv"] else {}
    split_conf = data["split"]
    fixed = _read_split_csv(split_conf["csv"]) if split_conf["csv"] else {}
    ids = [f.name for f in folders]
    order = np.random.default_rng(int(split_conf["seed"])).permutation(len(ids))
    n_test = int(round(float(split_conf["test"]) * len(ids)))
    n_val = int(round(float(split_conf["val"]) * len(ids)))
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[ids[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    split_of.update({k: v for k, v in fixed.items() if k in split_of})
    specs = []
    for folder, case_id in zip(folders, ids):
        clinical_id = id_map.get(case_id, case_id)
        specs.append(
            CaseSpec(
                case_id=case_id, split=split_of[case_id], source="folder", folder=str(folder),
                clinical=table.get(clinical_id) or table.get(case_id),
                tabular=tabular.get(case_id, tabular.get(clinical_id)),
            )
        )
    return specs


def synth_case(seed: int, cohort: str, small: bool, case_id: str):
    """One synthetic phantom (GliomaMTLLib.synth.generate_case).

    Small phantoms (tests) are memoized per process: several recipes prepared in one test session
    then generate each of them once.
    """
    if small:
        return copy.deepcopy(_small_synth_case(seed, cohort, case_id))
    return _generate(seed, cohort, small, case_id)


@functools.lru_cache(maxsize=64)
def _small_synth_case(seed: int, cohort: str, case_id: str):
    return _generate(seed, cohort, True, case_id)


def _generate(seed: int, cohort: str, small: bool, case_id: str):
    from GliomaMTLLib.synth import generate_case

    return generate_case(seed, cohort=cohort, small=small, case_id=case_id)


def load_case(spec: CaseSpec, sequences: Sequence[str]):
    """Build (synthetic) or read (folder) the `Case` of a spec, with its clinical data attached."""
    if spec.source == "synth":
        return synth_case(spec.seed, spec.cohort, spec.small, spec.case_id)
    from GliomaMTLLib.io import attach_clinical, read_case

    case = read_case(spec.folder, case_id=spec.case_id, required=list(sequences))
    return attach_clinical(case, spec.clinical)


# --------------------------------------------------------------------------------------------
# Prepare
# --------------------------------------------------------------------------------------------


def stage_cache_spec(recipe: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Everything the prepared arrays of ``stage`` depend on (hashed into the cache key).

    Not the number of cases nor the split (each case has its own files, so a recipe with more
    cases adds to the same folder) and not the clinical table (genotype and survival of a folder
    source are read from the CSV when the cases are loaded).
    """
    data = recipe["data"]
    conf = recipe["stages"][stage]
    resize = next((p["input"]["size"] for p in conf["phases"] if p["input"]["mode"] == "resize"), None)
    if data["source"] == "synth":
        from GliomaMTLLib.synth.generator import GENERATOR_VERSION

        source = {**{k: data[k] for k in ("source", "cohort", "small", "seed")}, "generator": GENERATOR_VERSION}
    else:
        source = {"source": "folder", "root": str(Path(data["root"]).resolve())}
    return {
        "version": PREPARE_VERSION,
        "data": source,
        "sequences": list(recipe["sequences"]),
        "preprocess": dict(conf["preprocess"]),
        "resize_to": resize,
    }


def cache_root(recipe: Mapping[str, Any], run_dir: str | os.PathLike | None) -> Path:
    """Folder of prepared datasets: data.cache_dir, else $GLIOMAMTL_CACHE, else <runs>/_cache."""
    if recipe["data"]["cache_dir"]:
        return Path(recipe["data"]["cache_dir"])
    if os.environ.get("GLIOMAMTL_CACHE"):
        return Path(os.environ["GLIOMAMTL_CACHE"])
    base = Path(run_dir).resolve().parent if run_dir is not None else Path("runs")
    return base / "_cache"


def stage_cache_dir(recipe: Mapping[str, Any], stage: str, run_dir: str | os.PathLike | None) -> Path:
    spec = stage_cache_spec(recipe, stage)
    label = "synth" if spec["data"]["source"] == "synth" else Path(recipe["data"]["root"]).name
    return cache_root(recipe, run_dir) / f"{label}-{stage}-{fingerprint(spec)}"


def _resize(image: np.ndarray, label: np.ndarray | None, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Paper 001's "resize to 144^3": trilinear for the image, nearest for the label (MONAI Resize)."""
    from monai.transforms import Resize

    image_r = np.asarray(Resize(tuple(size), mode="trilinear")(image), dtype=np.float32)
    label_r = None
    if label is not None:
        label_r = np.asarray(Resize(tuple(size), mode="nearest")(label[None].astype(np.float32)))[0].astype(np.uint8)
    return image_r, label_r


def _geometry_dict(geometry: Geometry) -> dict[str, Any]:
    return {k: list(v) for k, v in asdict(geometry).items()}


def geometry_from_dict(data: Mapping[str, Any]) -> Geometry:
    return Geometry(
        size=tuple(int(v) for v in data["size"]), spacing=tuple(float(v) for v in data["spacing"]),
        origin=tuple(float(v) for v in data["origin"]), direction=tuple(float(v) for v in data["direction"]),
    )


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Environment that processes spawned inside the block start with: one thread per library."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: "1" for k in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _single_threaded_worker() -> None:
    import SimpleITK as sitk  # (BLAS and torch read the environment set by _single_threaded_children)

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _prepare_one(spec: CaseSpec, sequences: Sequence[str], targets: list[tuple[str, dict[str, Any], str]]) -> None:
    """Load one case once and write its arrays and metadata for every stage that lacks them."""
    from GliomaMTLLib.preprocess import PreprocessConfig, preprocess, preprocess_label

    todo = [(stage, spec_, folder) for stage, spec_, folder in targets
            if not (Path(folder) / f"{spec.case_id}.json").is_file()]
    if not todo:
        return
    case = load_case(spec, sequences)
    for stage, stage_spec, folder in todo:
        folder = Path(folder)
        pre = preprocess(case, list(sequences), PreprocessConfig.from_dict(stage_spec["preprocess"]))
        image = pre.image
        label = preprocess_label(case.label, pre.record).astype(np.uint8) if case.label is not None else None
        geometry = pre.geometry
        spacing = list(geometry.spacing)
        if stage_spec["resize_to"]:
            old = image.shape[1:]
            image, label = _resize(image, label, stage_spec["resize_to"])
            # zyx factor -> xyz spacing of the resized grid (the field of view is kept)
            factors = [o / n for o, n in zip(old, image.shape[1:])][::-1]
            spacing = [s * f for s, f in zip(spacing, factors)]
            geometry = Geometry(size=tuple(image.shape[1:][::-1]), spacing=tuple(spacing),
                                origin=geometry.origin, direction=geometry.direction)
        with atomic_path(folder / f"{spec.case_id}_image.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(image, dtype=np.float32))
        tumor_voxels, center = 0, None
        if label is not None:
            with atomic_path(folder / f"{spec.case_id}_label.npy") as tmp:
                np.save(tmp, np.ascontiguousarray(label, dtype=np.uint8))
            tumor = label > 0
            tumor_voxels = int(tumor.sum())
            if tumor_voxels:
                center = [float(c) for c in np.argwhere(tumor).mean(axis=0)]
        meta = {
            "case_id": spec.case_id,
            "shape": list(image.shape[1:]),
            "spacing": spacing,
            "geometry": _geometry_dict(geometry),
            "input_geometry": _geometry_dict(case.geometry),
            "has_label": label is not None,
            "tumor_voxels": tumor_voxels,
            "tumor_center": center,
            "genotype": dict(case.genotype),
            "survival_days": case.survival_days,
            "event": case.event,
        }
        write_text_atomic(folder / f"{spec.case_id}.json", json.dumps(meta))


@dataclass
class PrepareReport:
    folders: dict[str, Path]
    built: int = 0
    reused: int = 0
    seconds: float = 0.0


def prepare(
    recipe: Mapping[str, Any],
    run_dir: str | os.PathLike | None = None,
    progress: Callable[[float, str], None] | None = None,
    workers: int | None = None,
    splits: Iterable[str] = SPLITS,
) -> PrepareReport:
    """Prepare (or reuse) the arrays of every case of a recipe (of the given splits), for every stage.

    The trainer prepares the training split only, so training starts sooner; evaluation and
    export prepare the rest when they need it (into the same folders).

    Returns:
        a `PrepareReport`: stage -> cache folder, and how many cases were built or reused.
    """
    start = time.time()
    sequences = list(recipe["sequences"])
    targets, folders = [], {}
    for stage in recipe["stages"]:
        folder = stage_cache_dir(recipe, stage, run_dir)
        folders[stage] = folder
        spec = stage_cache_spec(recipe, stage)
        if not (folder / "spec.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / "spec.json", json.dumps(spec, indent=2, default=str))
        targets.append((stage, spec, str(folder)))
    wanted = set(splits)
    specs = [s for s in list_case_specs(recipe) if s.split in wanted]
    todo = [s for s in specs if not all((Path(f) / f"{s.case_id}.json").is_file() for _, _, f in targets)]
    report = PrepareReport(folders=folders, built=len(todo), reused=len(specs) - len(todo))
    if not todo:
        report.seconds = time.time() - start
        return report

    def _done(i: int, spec: CaseSpec) -> None:
        if progress is not None:
            progress((i + 1) / len(todo), f"prepared {spec.case_id} ({i + 1}/{len(todo)})")

    n_workers = int(workers if workers is not None else recipe["data"]["workers"] or 1)
    if n_workers > 1 and len(todo) > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        # One thread per worker: with SimpleITK, BLAS and torch each starting one thread per core in
        # every worker, 16 workers on 16 cores ran several times slower than 16 single-threaded ones.
        with _single_threaded_children(), ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                                               initializer=_single_threaded_worker) as pool:
            futures = [pool.submit(_prepare_one, s, sequences, targets) for s in todo]
            for i, (spec, fut) in enumerate(zip(todo, futures)):
                fut.result()
                _done(i, spec)
    else:
        for i, spec in enumerate(todo):
            _prepare_one(spec, sequences, targets)
            _done(i, spec)
    for stage, spec, folder in targets:
        # the folder's index (nnU-Net's dataset.json): every case prepared there so far
        metas = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))
                 if p.name not in ("dataset.json", "spec.json")]
        dataset = {"stage": stage, "key": Path(folder).name, "spec": spec, "sequences": sequences, "cases": metas}
        write_text_atomic(Path(folder) / "dataset.json", json.dumps(dataset, indent=1, default=str))
    report.seconds = time.time() - start
    return report


# --------------------------------------------------------------------------------------------
# Loading prepared cases
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedCase:
    """One case on a stage's grid, ready to sample from.

    Attributes:
        image: float32 (C, z, y, x), z-scored, 0 outside the brain.
        label: uint8 (z, y, x) internal labels, or None (no expert mask available for training).
        weak_label: uint8 (z, y, x) binary whole-tumor mask used when ``label`` is None, or None.
        genotype: task -> class index (-1 unknown), in the recipe's task order.
        tabular: float32 vector or None.
        fg: per tumor label value, flat indices of its voxels (foreground oversampling).
    """

    case_id: str
    split: str
    image: np.ndarray
    label: np.ndarray | None
    weak_label: np.ndarray | None
    reference: np.ndarray | None
    genotype: dict[str, int]
    genotype_names: dict[str, str]
    survival_days: float | None
    event: bool | None
    tabular: np.ndarray | None
    spacing: tuple[float, float, float]
    geometry: Geometry
    input_geometry: Geometry
    tumor_center: tuple[float, float, float] | None
    fg: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])  # type: ignore[return-value]

    @property
    def has_label(self) -> bool:
        return self.label is not None


def _weak_mask(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A weak whole-tumor mask standing in for a pretrained model's output (paper 002): the
    reference whole tumor, eroded or dilated by 1-2 voxels, binarized."""
    from scipy import ndimage

    wt = label > 0
    steps = int(rng.integers(-2, 3))
    if steps > 0:
        wt = ndimage.binary_dilation(wt, iterations=steps)
    elif steps < 0:
        eroded = ndimage.binary_erosion(wt, iterations=-steps)
        wt = eroded if eroded.any() else wt
    return wt.astype(np.uint8)


def _synthetic_tabular(genotype: Mapping[str, str], dim: int, seed: int) -> np.ndarray:
    """A stand-in for SCNA PCA scores: genotype-linked offsets plus noise (centred, unit scale)."""
    from GliomaMTLLib.labels import GENOTYPE_TASKS

    rng = np.random.default_rng(seed)
    vec = rng.normal(0.0, 1.0, dim).astype(np.float32)
    proj = np.random.default_rng(12345).normal(0.0, 1.0, (sum(len(c) for c in GENOTYPE_TASKS.values()), dim))
    row = 0
    for task, classes in GENOTYPE_TASKS.items():
        for cls in classes:
            if genotype.get(task) == cls:
                vec += 1.5 * proj[row].astype(np.float32)
            row += 1
    return vec


def load_dataset(
    recipe: Mapping[str, Any], folder: str | os.PathLike, splits: Iterable[str] = ("train",),
    mmap: bool | None = None, with_reference: bool = False,
) -> list[PreparedCase]:
    """Load the recipe's prepared cases of the given splits from a stage's cache folder.

    Genotype and survival come from the phantom (synthetic source) or from the clinical CSV
    (folder source, read now, so a corrected CSV needs no new prepare). Label availability
    (``data.genotype_fraction``, ``data.expert_label_fraction``) is applied to the training split
    only, with a generator seeded by ``data.seed``, so every run and every DDP rank hides the same
    labels.

    Args:
        with_reference: keep the full label in ``reference`` even where ``label`` is hidden
            (evaluation needs the reference of every case).

    Raises:
        FileNotFoundError: a case of the recipe has not been prepared in ``folder``.
    """
    folder = Path(folder)
    data = recipe["data"]
    tasks = {task: list(classes) for task, classes in recipe["tasks"].items()}
    mmap_mode = "r" if (mmap if mmap is not None else not data["in_memory"]) else None
    wanted = set(splits)
    tab = data["tabular"]
    specs = list_case_specs(recipe)
    train_ids = [s.case_id for s in specs if s.split == "train"]
    avail_rng = np.random.default_rng([int(data["seed"]), 2002])
    n = len(train_ids)
    keep_geno = avail_rng.permutation(n)[: int(round(float(data["genotype_fraction"]) * n))]
    keep_mask = avail_rng.permutation(n)[: int(round(float(data["expert_label_fraction"]) * n))]
    hide_geno = set(train_ids) - {train_ids[i] for i in keep_geno}
    hide_mask = set(train_ids) - {train_ids[i] for i in keep_mask}
    cases: list[PreparedCase] = []
    for idx, spec in enumerate(specs):
        if spec.split not in wanted:
            continue
        cid = spec.case_id
        meta_path = folder / f"{cid}.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: case {cid} is not prepared; run the prepare stage first")
        c = json.loads(meta_path.read_text())
        clinical = c if spec.source == "synth" else {**(spec.clinical or {}), "genotype": {
            t: (spec.clinical or {}).get(t) for t in tasks if (spec.clinical or {}).get(t)}}
        image = np.load(folder / f"{cid}_image.npy", mmap_mode=mmap_mode)
        label = np.load(folder / f"{cid}_label.npy", mmap_mode=mmap_mode) if c["has_label"] else None
        reference = label
        names = {t: v for t, v in clinical["genotype"].items() if t in tasks}
        genotype = {t: (tasks[t].index(names[t]) if names.get(t) in tasks[t] else -1) for t in tasks}
        weak = None
        if spec.split == "train":
            if cid in hide_geno:
                genotype = {t: -1 for t in tasks}
            if cid in hide_mask and label is not None:
                weak = _weak_mask(np.asarray(label), np.random.default_rng([int(data["seed"]), 2003, idx]))
                label = None
        tabular = None
        if int(tab["dim"]) > 0:
            if spec.tabular is not None:
                tabular = np.asarray(spec.tabular, dtype=np.float32)[: int(tab["dim"])]
            elif tab["synthetic"]:
                tabular = _synthetic_tabular(clinical["genotype"], int(tab["dim"]), int(data["seed"]) * 7919 + idx)
        fg: dict[int, np.ndarray] = {}
        source = label if label is not None else weak
        if source is not None:
            flat = np.asarray(source).reshape(-1)
            for value in np.unique(flat):
                if value > 0:
                    idxs = np.flatnonzero(flat == value)
                    if idxs.size > 50_000:  # a subsample is plenty to draw centres from
                        idxs = idxs[:: idxs.size // 50_000 + 1]
                    fg[int(value)] = idxs
        cases.append(
            PreparedCase(
                case_id=cid, split=spec.split, image=image, label=label, weak_label=weak,
                reference=reference if with_reference else None, genotype=genotype, genotype_names=names,
                survival_days=clinical.get("survival_days"), event=clinical.get("event"), tabular=tabular,
                spacing=tuple(c["spacing"]), geometry=geometry_from_dict(c["geometry"]),
                input_geometry=geometry_from_dict(c["input_geometry"]),
                tumor_center=tuple(c["tumor_center"]) if c["tumor_center"] else None, fg=fg,
            )
        )
    return cases
