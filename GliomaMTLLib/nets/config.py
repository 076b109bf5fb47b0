"""`NetConfig`: the serialisable description of a `MultiTaskNet` (it goes into ``model.json``).

The dataclass round-trips through a plain JSON-compatible dict::

    cfg = NetConfig(features=(16, 32, 64, 128), tasks={"idh": ("wildtype", "mutant")})
    assert NetConfig.from_dict(cfg.to_dict()) == cfg

`NetConfig.from_dict` is strict: an unknown key, an unknown head style or task, a class list
that differs from `GliomaMTLLib.labels.GENOTYPE_TASKS`, or a value of the wrong type raises
`ValueError` naming the offending key and value. A silently ignored key in ``model.json`` would
mean shipped weights loaded into a different architecture than they were trained with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from GliomaMTLLib.labels import GENOTYPE_TASKS, REGIONS

HEAD_STYLES: tuple[str, ...] = ("bottleneck", "multilevel", "seggated")
HEAD_POOLS: tuple[str, ...] = ("avg", "max", "avgmax")
NORMS: tuple[str, ...] = ("instance", "batch")


def default_regions(num_seg_classes: int) -> dict[str, tuple[int, ...]]:
    """Evaluation regions (name -> label indices summed into it) for a seg head of this size.

    4 classes (bg, NCR, ED, ET): the BraTS regions WT = {1,2,3}, TC = {1,3}, ET = {3}.
    Any other size (e.g. a 2-class pediatric whole-tumor model): one region ``WT`` = all
    non-background labels.
    """
    if num_seg_classes == 4:
        return dict(REGIONS)
    return {"WT": tuple(range(1, num_seg_classes))}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_tuple(name: str, value: Any, min_len: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"NetConfig.{name} must be a list of positive integers, got {value!r}")
    items = tuple(value)
    if len(items) < min_len or not all(_is_int(v) and v > 0 for v in items):
        raise ValueError(
            f"NetConfig.{name} must be a list of at least {min_len} positive integers, got {value!r}"
        )
    return items


def _normalise_tasks(value: Any) -> dict[str, tuple[str, ...]]:
    """Accept ``["idh", ...]`` or ``{"idh": ["wildtype", "mutant"], ...}``; validate against GENOTYPE_TASKS."""
    if value is None:
        return {}
    if isinstance(value, str):
        raise ValueError(f"NetConfig.tasks must be a list of task names or a dict task -> class names, got {value!r}")
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        try:
            pairs = [(name, None) for name in value]
        except TypeError:
            raise ValueError(
                f"NetConfig.tasks must be a list of task names or a dict task -> class names, got {value!r}"
            ) from None
    tasks: dict[str, tuple[str, ...]] = {}
    for name, classes in pairs:
        if name not in GENOTYPE_TASKS:
            raise ValueError(
                f"NetConfig.tasks: unknown genotype task {name!r}; known tasks: {sorted(GENOTYPE_TASKS)}"
            )
        expected = GENOTYPE_TASKS[name]
        if classes is None:
            classes = expected
        if isinstance(classes, str) or tuple(classes) != expected:
            raise ValueError(
                f"NetConfig.tasks[{name!r}]: class names {classes!r} differ from {list(expected)} "
                "(GliomaMTLLib.labels.GENOTYPE_TASKS); the class order is part of the weights"
            )
        tasks[name] = expected
    return tasks


@dataclass
class NetConfig:
    """Arguments of `MultiTaskNet`.

    Attributes:
        in_channels: number of input MR channels (4 for t1n/t1c/t2w/t2f, 1 for FLAIR-only).
        num_seg_classes: mutually exclusive seg labels incl. background (4: bg, NCR, ED, ET).
        features: channels per resolution level; ``len(features)`` is the depth, and every
            spatial input size must be a multiple of ``2 ** (depth - 1)``.
        head_style: ``"bottleneck"`` (papers 002/003), ``"multilevel"`` (001) or
            ``"seggated"`` (000). Ignored when ``tasks`` is empty, but still validated.
        tasks: genotype task -> class names (must equal ``GENOTYPE_TASKS[task]``).
        distance_decoder: add the auxiliary distance-map decoder of paper 004.
        dist_channels: channels of the distance output (default: one per region of
            `default_regions`, i.e. WT, TC, ET for a 4-class model).
        tabular_dim: length of an optional tabular vector (e.g. SCNA PCA-50 of paper 002);
            0 = no tabular input.
        tabular_hidden: width of the small MLP the tabular vector goes through.
        head_hidden: hidden width of each task's classifier MLP; 0 = a single linear layer
            (paper 002's "fully connected layer" after concatenation).
        head_pool: global pooling of head features: ``"avg"`` (001/002/003), ``"max"`` or
            ``"avgmax"`` (000: GAP and GMP concatenated).
        gate_features: channels of the second, small encoder of the seg-gated head (default:
            half of ``features``, at least 4, same depth; 000 reuses the segmentation encoder's
            structure, we keep its depth but halve its width for CPU speed).
        gate_detach: stop gradients from the genotype loss flowing into the seg path through
            the gate P(WT). Paper 000 trains end to end (False).
        seg_summary: also feed the genotype heads the composition of the predicted tumor
            (mean P(WT) over the input and the share of each tumor label within it, from the
            detached softmax). Enhancement and necrosis patterns are what radiologists read
            IDH and 1p/19q from; handing the head these few numbers directly lets it learn them
            from a small cohort instead of rediscovering them from pooled features.
            Default False (the papers).
        dropout: dropout before the classifier layers of the genotype heads.
        block_dropout: dropout inside the encoder/decoder conv blocks (001 uses dropout in
            its residual blocks).
        light_top: at full resolution use one 3x3x3 conv in the encoder and one after the
            last skip concatenation in the decoder, instead of a residual block and a two-conv
            block. The full-resolution level is ~60% of the CPU time of a forward pass; this
            option cuts about a quarter of it (measured at 128^3). Default False (the papers).
        norm: ``"instance"`` (001, default) or ``"batch"`` (000, 004).
        negative_slope: LeakyReLU slope (0.1 as in 001).
    """

    in_channels: int = 4
    num_seg_classes: int = 4
    features: tuple[int, ...] = (16, 32, 64, 128)
    head_style: str = "bottleneck"
    tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    distance_decoder: bool = False
    dist_channels: int | None = None
    tabular_dim: int = 0
    tabular_hidden: int = 32
    head_hidden: int = 64
    head_pool: str = "avgmax"
    gate_features: tuple[int, ...] | None = None
    gate_detach: bool = False
    seg_summary: bool = False
    dropout: float = 0.0
    block_dropout: float = 0.0
    light_top: bool = False
    norm: str = "instance"
    negative_slope: float = 0.1

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_seg_classes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"NetConfig.{name} must be a positive integer, got {value!r}")
        if self.num_seg_classes < 2:
            raise ValueError(
                f"NetConfig.num_seg_classes must be >= 2 (background + tumor), got {self.num_seg_classes!r}"
            )
        self.features = _int_tuple("features", self.features, min_len=2)
        if self.head_style not in HEAD_STYLES:
            raise ValueError(f"NetConfig.head_style: unknown head style {self.head_style!r}; expected one of {HEAD_STYLES}")
        if self.head_pool not in HEAD_POOLS:
            raise ValueError(f"NetConfig.head_pool: unknown pooling {self.head_pool!r}; expected one of {HEAD_POOLS}")
        if self.norm not in NORMS:
            raise ValueError(f"NetConfig.norm: unknown normalisation {self.norm!r}; expected one of {NORMS}")
        self.tasks = _normalise_tasks(self.tasks)
        for name in ("distance_decoder", "gate_detach", "light_top", "seg_summary"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"NetConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.dist_channels is None:
            self.dist_channels = len(default_regions(self.num_seg_classes))
        if not _is_int(self.dist_channels) or self.dist_channels < 1:
            raise ValueError(f"NetConfig.dist_channels must be a positive integer, got {self.dist_channels!r}")
        for name in ("tabular_dim", "head_hidden"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"NetConfig.{name} must be an integer >= 0, got {value!r}")
        if not _is_int(self.tabular_hidden) or self.tabular_hidden < 1:
            raise ValueError(f"NetConfig.tabular_hidden must be a positive integer, got {self.tabular_hidden!r}")
        if self.gate_features is None:
            self.gate_features = tuple(max(4, f // 2) for f in self.features)
        self.gate_features = _int_tuple("gate_features", self.gate_features, min_len=2)
        if len(self.gate_features) > len(self.features):
            raise ValueError(
                f"NetConfig.gate_features {list(self.gate_features)} is deeper than features "
                f"{list(self.features)}; the gated encoder may not downsample more than the backbone"
            )
        for name in ("dropout", "block_dropout"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"NetConfig.{name} must be a number in [0, 1), got {value!r}")
            setattr(self, name, float(value))
        if not _is_number(self.negative_slope) or not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"NetConfig.negative_slope must be a number in [0, 1), got {self.negative_slope!r}")
        self.negative_slope = float(self.negative_slope)

    @property
    def depth(self) -> int:
        """Number of resolution levels."""
        return len(self.features)

    @property
    def size_multiple(self) -> int:
        """Every spatial input size must be a multiple of this (``2 ** (depth - 1)``)."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (lists, not tuples)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tasks":
                value = {task: list(classes) for task, classes in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetConfig":
        """Build from a dict (e.g. ``model.json["network"]``).

        Raises:
            ValueError: naming unknown keys, or any key with a bad value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"NetConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"NetConfig: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(data))


def localizer_config(in_channels: int = 4, features: tuple[int, ...] = (8, 16, 32, 64),
                     num_seg_classes: int = 4) -> NetConfig:
    """The recommended stage-1 network of the cascade: the same family, seg path only, few channels.

    Meant for the whole brain at 2-4 mm (e.g. 240x240x155 at 2 mm -> about 120x120x80 voxels,
    padded to a multiple of ``2 ** (len(features) - 1)``).
    """
    return NetConfig(in_channels=in_channels, num_seg_classes=num_seg_classes, features=features, tasks={})


def crop_config(in_channels: int = 4, features: tuple[int, ...] = (16, 32, 64, 128),
                tasks: Any = ("idh", "codel_1p19q"), head_style: str = "bottleneck",
                **kwargs: Any) -> NetConfig:
    """The recommended stage-2 multi-task network, run on a fixed crop (96^3-128^3) around the tumor."""
    return NetConfig(in_channels=in_channels, features=features, tasks=tasks, head_style=head_style, **kwargs)
