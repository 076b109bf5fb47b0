"""One synthetic glioma case: subject -> anatomy -> tumour -> four MR sequences.

Stages (all seeded from one ``numpy.random.Generator``, so a seed fixes every array):
  1. subject: cohort subtype, genotype labels, age, lesion plans (genotype.py);
  2. pose and lesion centres: global scale/rotation/translation; centres drawn in MNI space from
     genotype-dependent regions and tissue, mapped to the output grid;
  3. anatomy: MNI152 GM/WM/CSF and the ventricles' signed distance pulled back through pose +
     random smooth deformation + tumour mass effect (deform.py), age-dependent CSF widening,
     subject-sized pure-fluid ventricles and sharpened cisterns (fluid.py), skull-strip cuts;
  4. tumour compartments and labels inside the lesion box (tumor.py);
  5. contrast style, textures, bias; normal look-alike structures (choroid plexus, vessels, dura,
     white-matter hyperintensities, bright limbic grey matter: distractors.py), never labelled;
     rendering of t1n/t1c/t2w/t2f (appearance.py, render.py);
  6. stored intensity range and type (int16 with a few small negative edge values, or float),
     survival.

The output grid is the BraTS/SRI24 grid as SimpleITK reads it (240x240x155, 1 mm, identity
direction, origin (0, -239, 0)); ``small=True`` runs the same pipeline on a 64x64x52 grid of 3 mm
with the templates block-averaged to 2 mm (for fast tests), never by shrinking a full case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.labels import SEQUENCES
from GliomaMTLLib.synth.anatomy import VENTRICLE_SDF_MAX_MM, Anatomy, load_anatomy, ras_to_lps
from GliomaMTLLib.synth.appearance import CaseStyle, sample_style
from GliomaMTLLib.synth.deform import (Deformation, MassEffect, Pose, dense_field, output_bounds,
                                        rotation_matrix, warp)
from GliomaMTLLib.synth.distractors import DISTRACTOR_CLASSES, build_distractors, cut_cortex, sparse
from GliomaMTLLib.synth.fields import box_geometry, smooth_noise
from GliomaMTLLib.synth.fluid import (FluidPlan, apply_fluid, sample_fluid_plan, ventricle_distance,
                                      ventricle_weight)
from GliomaMTLLib.synth.genotype import LesionPlan, Subject, choose_center, sample_subject, sample_survival
from GliomaMTLLib.synth.render import Scene, render_sequence
from GliomaMTLLib.synth.tumor import Lesion, build_tumor

#: Version of the phantom generator: part of every cache key of generated or prepared phantoms,
#: bumped whenever the same seed gives different images (2: fluid spaces, distractors, FLAIR-bright
#: necrosis, small and multifocal tumours).
GENERATOR_VERSION = 2

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: The BraTS (SRI24) grid as SimpleITK reads BraTS NIfTI files.
FULL_GRID = Geometry(size=(240, 240, 155), spacing=(1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0), direction=_IDENTITY)
#: The small test grid: same physical centre, 3 mm voxels, 192 x 192 x 156 mm field of view.
SMALL_GRID = Geometry(size=(64, 64, 52), spacing=(3.0, 3.0, 3.0), origin=(25.0, -214.0, 0.5), direction=_IDENTITY)


def grid_center(grid: Geometry) -> np.ndarray:
    """Physical centre (LPS mm) of an identity-direction grid."""
    return np.asarray(grid.origin) + (np.asarray(grid.size) - 1) / 2.0 * np.asarray(grid.spacing)


@dataclass
class SynthResult:
    """A generated case plus what made it (for tests, previews and calibration).

    Attributes:
        case: the `Case` (float32 images, uint8 labels, genotype, survival).
        brain: boolean brain mask on the case grid.
        crop: sub-grid of the case grid where the brain lies; ``crop_box`` its index slices.
        tissue: ``csf``/``gm``/``wm`` partial-volume weights on ``crop`` (``csf`` includes the
            pure-fluid ventricles and cisterns).
        ventricles: pure-fluid weight of the ventricular system on ``crop``.
        fluid: the subject's ventricle size, asymmetry and CSF sharpening.
        subject: subtype, age, lesion plans.
        lesions: placed lesions (output LPS mm).
        style: contrast and acquisition of each sequence.
        scene: the maps every sequence was rendered from (crop grid).
        store_int16: whether the images are integer-valued and meant to be stored as int16.
        timings: seconds per stage.
    """

    case: Case
    brain: np.ndarray
    crop: Geometry
    crop_box: tuple[slice, slice, slice]
    tissue: dict[str, np.ndarray]
    ventricles: np.ndarray
    fluid: FluidPlan
    subject: Subject
    lesions: list[Lesion]
    style: CaseStyle
    scene: Scene
    store_int16: bool
    timings: dict[str, float] = field(default_factory=dict)

    def tissue_full(self, name: str) -> np.ndarray:
        """A tissue weight map (``csf``, ``gm``, ``wm``, or ``ventricles``) pasted on the full case grid."""
        out = np.zeros(self.case.geometry.shape, dtype=np.float32)
        out[self.crop_box] = self.tissue[name] if name != "ventricles" else self.ventricles
        return out

    def distractor_full(self, name: str) -> np.ndarray:
        """A distractor's weight (`distractors.DISTRACTOR_CLASSES`) on the full case grid."""
        crop = np.zeros(self.crop.shape, dtype=np.float32)
        if name in self.scene.distractors:
            idx, values = self.scene.distractors[name]
            crop.reshape(-1)[idx] = values
        out = np.zeros(self.case.geometry.shape, dtype=np.float32)
        out[self.crop_box] = crop
        return out


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ])


def _pose(rng: np.random.Generator, cohort: str, grid: Geometry, anatomy: Anatomy) -> Pose:
    size = float(rng.uniform(0.86, 0.97))  # MNI152 brains are larger than the SRI24 atlas
    if cohort == "pediatric":
        size *= float(rng.uniform(0.8, 0.95))
    scale = size * np.exp(rng.normal(0.0, 0.03, size=3))
    angles = np.deg2rad(np.clip(rng.normal(0.0, [4.0, 3.0, 4.0]), -10.0, 10.0))
    translation = np.clip(rng.normal(0.0, [2.5, 3.5, 3.0]), -8.0, 8.0)
    return Pose(scale=scale, rotation=rotation_matrix(angles), translation=translation,
                out_center=grid_center(grid), tpl_center=anatomy.center_lps)


def _min_depth(plan: LesionPlan, pose: Pose) -> float:
    """Least depth (template mm) of a lesion centre below the brain surface: the core should lie
    mostly inside the brain; capped so that thin structures (cerebellar hemispheres, temporal
    lobes) still host large tumours."""
    return min((plan.radius * 0.7 + 3.0) / float(np.mean(pose.scale)), 16.0)


def _place_lesions(rng: np.random.Generator, subject: Subject, pose: Pose, anatomy: Anatomy) -> list[Lesion]:
    lesions: list[Lesion] = []
    first_ras = None
    for k, plan in enumerate(subject.lesions):
        near = first_ras if (k > 0 and subject.multifocal_nearby) else None
        ras = choose_center(rng, anatomy, subject.subtype, plan, _min_depth(plan, pose), near)
        if k == 0:
            first_ras = ras
        axes = np.exp(rng.normal(0.0, 0.15, size=3))
        axes /= np.cbrt(np.prod(axes))
        params = dict(plan.params)
        lesions.append(Lesion(
            center=pose.to_output(ras_to_lps(ras)), radius=plan.radius, axes=axes,
            rotation=_random_rotation(rng), lobe_scale=plan.radius * float(rng.uniform(0.45, 1.0)),
            pattern=plan.pattern, edema_wm_bias=float(rng.uniform(0.6, 1.4)),
            edema_irregularity=float(rng.uniform(0.15, 0.45)), edema_profile=float(rng.uniform(0.35, 1.2)),
            **params,
        ))
    return lesions


def _box_in(grid: Geometry, sub: Geometry) -> tuple[slice, slice, slice]:
    i0 = np.round((np.asarray(sub.origin) - np.asarray(grid.origin)) / np.asarray(grid.spacing)).astype(int)
    return tuple(slice(int(i0[d]), int(i0[d] + sub.size[d])) for d in (2, 1, 0))  # type: ignore[return-value]


def _edge(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it."""
    inner = mask.copy()
    for axis in range(3):
        for shift in (1, -1):
            inner &= np.roll(mask, shift, axis=axis)
    return mask & ~inner


def _finish(x: np.ndarray, brain: np.ndarray, edge: np.ndarray | None, max_value: float, int16: bool,
            rng: np.random.Generator) -> np.ndarray:
    """Scale to the stored maximum, round for int16 storage, add the small negative edge values."""
    top = float(x.max())
    x *= np.float32(max_value / top) if top > 0 else np.float32(1.0)
    if int16:
        np.rint(x, out=x)
        x[brain] = np.maximum(x[brain], 1.0)
        if edge is not None:
            idx = np.flatnonzero(edge)
            n = int(len(idx) * rng.uniform(0.01, 0.08))
            if n:
                pick = rng.choice(idx, size=n, replace=False)
                low = max(2, int(round(max_value * 0.004)))
                x.flat[pick] = -rng.integers(1, low, size=n).astype(np.float32)
    return x


def replay_main_lesion(seed: int, cohort: str = "adult", small: bool = False) -> tuple[Subject, Pose, np.ndarray]:
    """The subject, pose and main-lesion centre (MNI RAS mm) that ``synthesize(seed, cohort, small)``
    draws, without building anything: the generator draws them first, in this order, from
    ``default_rng(seed)``. For measuring what the images show of the generator's hidden draws."""
    rng = np.random.default_rng(int(seed))
    grid = SMALL_GRID if small else FULL_GRID
    anatomy = load_anatomy(2 if small else 1)
    subject = sample_subject(rng, cohort)
    pose = _pose(rng, cohort, grid, anatomy)
    plan = subject.lesions[0]
    return subject, pose, choose_center(rng, anatomy, subject.subtype, plan, _min_depth(plan, pose), None)


def synthesize(seed: int, cohort: str = "adult", small: bool = False, case_id: str | None = None, *,
               contrast_spread: float = 1.0, degrade: bool = True,
               texture_like: Mapping[str, str] | None = None) -> SynthResult:
    """Generate one phantom case with everything that made it; see `generate_case`.

    ``contrast_spread=0, degrade=False`` render the calibrated base contrast without acquisition
    effects (what ``scripts/bench_synth.py --stats`` compares with REAL_STATS.md);
    ``texture_like`` swaps class textures (see :func:`~GliomaMTLLib.synth.appearance.sample_style`).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rng = np.random.default_rng(int(seed))
    grid = SMALL_GRID if small else FULL_GRID
    anatomy = load_anatomy(2 if small else 1)
    timings["anatomy"] = time.perf_counter() - t0

    subject = sample_subject(rng, cohort)
    pose = _pose(rng, cohort, grid, anatomy)
    lesions = _place_lesions(rng, subject, pose, anatomy)
    # The inserted ball stays inside the core even where lobulation pulls the outline in, so the
    # collapsed tissue at its centre is never exposed.
    masses = [MassEffect(center=les.center,
                         radius=les.radius * float(np.cbrt(les.mass)) * max(1.0 - 1.5 * les.lobulation, 0.4),
                         falloff=les.radius * float(rng.uniform(0.8, 1.6)) + 8.0) for les in lesions]
    deformation = Deformation(pose=pose, random_amplitude_mm=float(rng.uniform(0.5, 3.0)),
                              random_scale_mm=float(rng.uniform(28.0, 55.0)), masses=masses)
    spacing = float(grid.spacing[0])
    crop = output_bounds(deformation, anatomy.surface_lps, grid,
                         margin_mm=3.0 + 2.0 * deformation.random_amplitude_mm + spacing)
    t = time.perf_counter()
    fld = dense_field(deformation, crop, rng, coarse_mm=4.0 if not small else 6.0)
    tissue = {k: warp(getattr(anatomy, k), fld, crop) for k in ("gm", "wm", "csf")}
    vent_sdf = warp(anatomy.vent, fld, crop, outside=VENTRICLE_SDF_MAX_MM)
    del fld
    timings["warp"] = time.perf_counter() - t

    t = time.perf_counter()
    soft = tissue["gm"] + tissue["wm"] + tissue["csf"]
    brain = soft >= 0.5
    # Age-dependent CSF widening (atrophy in the elderly, tight sulci in children).
    if cohort == "adult":
        widen = float(np.clip(0.012 * (subject.age - 35.0) + rng.normal(0.0, 0.2), 0.0, 1.0))
    else:
        widen = float(rng.uniform(-0.4, 0.0))
    tissue["csf"] *= np.float32(1.0 + widen)
    norm = np.maximum(tissue["gm"] + tissue["wm"] + tissue["csf"], 1e-3)
    for k in tissue:
        tissue[k] /= norm
    del norm, soft
    fluid = sample_fluid_plan(rng, cohort, subject.age)
    wobble = smooth_noise(rng, crop, float(rng.uniform(10.0, 20.0)))
    midline_x = float(pose.to_output(anatomy.center_lps)[0])
    vent_distance = ventricle_distance(vent_sdf, crop, fluid, midline_x, wobble)
    del vent_sdf, wobble
    ventricles = ventricle_weight(vent_distance, spacing) * brain
    apply_fluid(tissue, ventricles, fluid)
    brain &= ~cut_cortex(rng, crop, brain)
    tumor = build_tumor(lesions, crop, tissue["wm"], tissue["csf"], brain, rng)
    timings["tumor"] = time.perf_counter() - t

    t = time.perf_counter()
    style = sample_style(rng, spread=contrast_spread, degrade=degrade, texture_like=texture_like)
    if subject.subtype in ("idh_mut_intact", "idh_mut_codel"):
        # Enhancement of IDH-mutant gliomas, when present, is usually faint.
        for seq in ("t1c",):
            st = style.sequences[seq]
            if not st.wild:
                st.means["et"] = st.means["wm"] + (st.means["et"] - st.means["wm"]) * float(rng.uniform(0.45, 1.0))
    textures = {
        "tissue": smooth_noise(rng, crop, float(rng.uniform(3.0, 8.0))),
        "fine": smooth_noise(rng, crop, max(2.5, spacing)),
    }
    maps = build_distractors(rng, crop, pose, tissue, ventricles, vent_distance, brain, subject.age,
                             textures["tissue"], textures["fine"])
    del vent_distance
    if tumor is not None:
        # Nothing inside the tumour (its core replaces the tissue; labelled voxels are tumour).
        core_total = sum(tumor.core.values())
        free = (tumor.label == 0) * np.clip(1.0 - 2.0 * core_total, 0.0, 1.0)
        for w in maps.values():
            w[tumor.box] *= free
    distractors = {name: sparse(maps[name]) for name in DISTRACTOR_CLASSES}
    del maps
    tumor_textures: dict[str, np.ndarray] = {}
    if tumor is not None:
        box_shape = tuple(s.stop - s.start for s in tumor.box)
        box_origin = np.asarray(crop.origin) + np.array([tumor.box[2].start, tumor.box[1].start,
                                                         tumor.box[0].start]) * spacing
        bgrid = box_geometry(box_origin, box_shape[::-1], spacing)
        tumor_textures = {"core": smooth_noise(rng, bgrid, float(rng.uniform(2.5, 6.0))),
                          "edema": smooth_noise(rng, bgrid, float(rng.uniform(4.0, 10.0)))}
    scene = Scene(grid=crop, weights=tissue, brain=brain, textures=textures, distractors=distractors,
                  tumor=tumor, tumor_textures=tumor_textures)
    crop_box = _box_in(grid, crop)
    full_brain = np.zeros(grid.shape, dtype=bool)
    full_brain[crop_box] = brain
    edge = _edge(full_brain) if (style.int16 and style.negative_edge) else None
    timings["fields"] = time.perf_counter() - t

    t = time.perf_counter()
    images = {}
    # One Gaussian noise volume, rolled by a random offset per sequence: independent-looking white
    # noise for each sequence at a quarter of the cost of drawing four.
    noise = rng.standard_normal(crop.shape, dtype=np.float32)
    for seq in SEQUENCES:
        st = style.sequences[seq]
        bias = smooth_noise(rng, crop, st.bias_scale_mm, exp_amplitude=st.bias_amplitude)
        shift = int(rng.integers(1000, noise.size - 1000))
        x = render_sequence(scene, st, bias, np.roll(noise.ravel(), shift).reshape(noise.shape))
        full = np.zeros(grid.shape, dtype=np.float32)
        full[crop_box] = x
        images[seq] = _finish(full, full_brain, edge, st.max_value, style.int16, rng)
    timings["render"] = time.perf_counter() - t

    label = np.zeros(grid.shape, dtype=np.uint8)
    if tumor is not None:
        sub = label[crop_box]
        sub[tumor.box] = tumor.label
    wt_ml = float(np.count_nonzero(label)) * grid.voxel_volume_ml
    survival, event = sample_survival(rng, subject, wt_ml)
    if case_id is None:
        case_id = f"synth-{cohort}-{int(seed)}"
    case = Case(case_id=case_id, images=images, geometry=grid, label=label, genotype=dict(subject.genotype),
                survival_days=survival, event=event)
    timings["total"] = time.perf_counter() - t0
    return SynthResult(case=case, brain=full_brain, crop=crop, crop_box=crop_box, tissue=tissue,
                       ventricles=ventricles, fluid=fluid, subject=subject, lesions=lesions, style=style, scene=scene, store_int16=style.int16,
                       timings=timings)


def generate_case(seed: int, cohort: str = "adult", small: bool = False, case_id: str | None = None) -> Case:
    """Generate one synthetic glioma case.

    Args:
        seed: random seed; the same seed (and arguments) gives identical arrays.
        cohort: ``"adult"`` (IDH / 1p19q genotype) or ``"pediatric"`` (BRAF genotype).
        small: run on the 64x64x52, 3 mm test grid instead of the 240x240x155, 1 mm BraTS grid.
        case_id: identifier stored in the case (default ``synth-<cohort>-<seed>``).

    Returns:
        A `Case` with float32 images for ``t1n``, ``t1c``, ``t2w``, ``t2f`` (exactly 0 outside the
        brain), uint8 labels (0 background, 1 NCR, 2 ED, 3 ET), genotype class names from
        ``labels.GENOTYPE_TASKS`` (adult: ``idh``, ``codel_1p19q``; pediatric: ``braf``),
        ``survival_days`` and ``event``.

    Raises:
        ValueError: for an unknown cohort.
        ImportError: if nilearn (the templates) is not installed.
    """
    return synthesize(seed, cohort=cohort, small=small, case_id=case_id).case
