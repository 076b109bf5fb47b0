"""`MultiTaskNet`: one 3D encoder-decoder for tumor segmentation plus optional genotype heads.

Architecture (all blocks from ``monai.networks.blocks``)::

    x (B, C, z, y, x)
      encoder: level 0 UnetResBlock(stride 1), levels 1.. UnetResBlock(stride 2)   (001: strided
               conv downsampling, residual units, instance norm, LeakyReLU(0.1))
      decoder: UnetUpBlock per level (transposed conv, concat skip, two convs) -> UnetOutBlock
               -> "seg" logits (B, num_seg_classes, z, y, x)
      distance decoder (optional, 004): a second, parallel decoder of the same shape on the
               same skips -> "dist" logits (B, R, z, y, x); sigmoid gives the normalized map
      genotype heads (optional, any subset of GENOTYPE_TASKS):
        "bottleneck" (002, 003): deepest encoder features -> 1x1x1 conv + LeakyReLU -> global pool
        "multilevel" (001):      the three coarsest decoder outputs -> 1x1x1 conv + LeakyReLU each
                                 -> global pool each -> concatenate
        "seggated"   (000):      P(WT) * x -> a second small encoder -> 1x1x1 conv + LeakyReLU on
                                 its two deepest levels -> GAP and GMP each -> concatenate
      then [tabular vector -> small MLP, concatenated (002)] -> per-task MLP -> logits (B, K)

Segmentation output: decision of the project lead. The seg head is a softmax over the four
mutually exclusive labels (0 background, 1 NCR, 2 ED, 3 ET), not three sigmoid region channels.
Region probabilities are sums of label probabilities, P(WT) = p1 + p2 + p3, P(TC) = p1 + p3,
P(ET) = p3 (see `GliomaMTLLib.nets.regions`), so they are nested (ET <= TC <= WT) by
construction, and ``argmax`` over the channel axis is directly the label map; there is no
threshold tuning nor any "ET outside TC" repair step. The 4-class form is also what paper 000
(softmax), 002 (4-class cross-entropy) and 004 (categorical focal loss over one-hot labels) train.

Size constraint: each spatial size must be a multiple of ``2 ** (len(features) - 1)`` (every
level halves the grid and the decoder concatenates skips of exactly twice its size), and the
deepest level must hold more than one voxel (instance norm needs at least two). `forward`
raises `ValueError` otherwise; pad the input (e.g. ``monai.transforms.DivisiblePad``).

Differences from the papers, on purpose: no transformer layer (000/TransBTS) nor multi-depth
fusion module (004) -- plain residual units keep CPU inference fast; each head projects its
features with a 1x1x1 conv + LeakyReLU before pooling: an instance-normalized map has zero
spatial mean per channel, so a plain global average of it (through a LeakyReLU) carries little
beyond the shape of its value distribution.

Speed option ``light_top``: the full-resolution level (~60% of a forward pass on CPU) uses one
conv in the encoder (MONAI `Convolution`) and one after the last skip concatenation
(`LightUpBlock`) instead of `UnetResBlock` / `UnetUpBlock`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, UnetOutBlock, UnetResBlock, UnetUpBlock
from monai.networks.blocks.dynunet_block import get_conv_layer

from GliomaMTLLib.nets.config import NetConfig


def _norm(cfg: NetConfig) -> tuple[str, dict[str, Any]]:
    if cfg.norm == "instance":
        return ("instance", {"affine": True})
    return ("batch", {})


def _act(cfg: NetConfig) -> tuple[str, dict[str, Any]]:
    return ("leakyrelu", {"negative_slope": cfg.negative_slope, "inplace": True})


def _block_dropout(cfg: NetConfig) -> float | None:
    return cfg.block_dropout if cfg.block_dropout > 0 else None


def global_pool(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Global pooling over all spatial axes: (B, C, ...) -> (B, C) or (B, 2C) for ``avgmax``."""
    flat = x.flatten(2)
    if mode == "avg":
        return flat.mean(dim=2)
    if mode == "max":
        return flat.amax(dim=2)
    return torch.cat([flat.mean(dim=2), flat.amax(dim=2)], dim=1)


class Encoder(nn.Module):
    """Residual encoder: level 0 at full resolution, each further level halves the grid.

    Args:
        in_channels: input channels.
        features: channels per level.
        cfg: network config (norm, activation, dropout).

    Returns (forward):
        list of feature maps, one per level, finest first.
    """

    def __init__(self, in_channels: int, features: tuple[int, ...], cfg: NetConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        prev = in_channels
        for level, ch in enumerate(features):
            if level == 0 and cfg.light_top:
                blocks.append(_single_conv(prev, ch, cfg))
                prev = ch
                continue
            blocks.append(
                UnetResBlock(
                    spatial_dims=3,
                    in_channels=prev,
                    out_channels=ch,
                    kernel_size=3,
                    stride=1 if level == 0 else 2,
                    norm_name=_norm(cfg),
                    act_name=_act(cfg),
                    dropout=_block_dropout(cfg),
                )
            )
            prev = ch
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        return levels


def _single_conv(in_channels: int, out_channels: int, cfg: NetConfig) -> Convolution:
    """3x3x3 conv -> norm -> dropout -> LeakyReLU (the `light_top` full-resolution block)."""
    return Convolution(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, kernel_size=3,
        act=_act(cfg), norm=_norm(cfg), dropout=_block_dropout(cfg), bias=False,
    )


class LightUpBlock(nn.Module):
    """`UnetUpBlock` with one conv after the concatenation (the `light_top` full-resolution level)."""

    def __init__(self, in_channels: int, out_channels: int, cfg: NetConfig) -> None:
        super().__init__()
        self.transp_conv = get_conv_layer(
            3, in_channels, out_channels, kernel_size=2, stride=2, act=None, norm=None,
            conv_only=False, is_transposed=True,
        )
        self.conv = _single_conv(2 * out_channels, out_channels, cfg)

    def forward(self, inp: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((self.transp_conv(inp), skip), dim=1))


class Decoder(nn.Module):
    """U-Net decoder on an `Encoder`'s levels, ending in a 1x1x1 output conv.

    Returns (forward):
        (logits at full resolution, decoder outputs coarsest first: levels depth-2 ... 0).
    """

    def __init__(self, features: tuple[int, ...], out_channels: int, cfg: NetConfig) -> None:
        super().__init__()
        ups: list[nn.Module] = []
        for level in range(len(features) - 1, 0, -1):
            if level == 1 and cfg.light_top:
                ups.append(LightUpBlock(features[1], features[0], cfg))
                continue
            ups.append(
                UnetUpBlock(
                    spatial_dims=3,
                    in_channels=features[level],
                    out_channels=features[level - 1],
                    kernel_size=3,
                    stride=1,
                    upsample_kernel_size=2,
                    norm_name=_norm(cfg),
                    act_name=_act(cfg),
                    dropout=_block_dropout(cfg),
                )
            )
        self.ups = nn.ModuleList(ups)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=features[0], out_channels=out_channels)

    def forward(self, skips: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = skips[-1]
        outputs = []
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(x, skip)
            outputs.append(x)
        return self.out(x), outputs


def seg_composition(seg_logits: torch.Tensor, eps: float = 1e-6, detach: bool = True) -> torch.Tensor:
    """(B, C, ...) seg logits -> (B, C): mean P(WT) over the volume, then the share of each tumor
    label 1..C-1 within the predicted tumor (soft volumes; zeros when there is no tumor).
    Computed from the detached softmax (``detach``), so the genotype loss does not reshape the
    segmentation; the values are the same either way."""
    p = torch.softmax((seg_logits.detach() if detach else seg_logits).float(), dim=1).flatten(2).sum(dim=2)
    tumor = p[:, 1:].sum(dim=1, keepdim=True)
    shares = p[:, 1:] / (tumor + eps)
    return torch.cat([tumor / p.sum(dim=1, keepdim=True), shares], dim=1).to(seg_logits.dtype)


class PooledProjection(nn.Module):
    """1x1x1 conv + LeakyReLU (no norm) then global pooling: (B, C, ...) -> (B, C * n_pool)."""

    def __init__(self, channels: int, cfg: NetConfig) -> None:
        super().__init__()
        self.proj = Convolution(
            spatial_dims=3, in_channels=channels, out_channels=channels, kernel_size=1,
            act=_act(cfg), norm=None, bias=True,
        )
        self.pool = cfg.head_pool
        self.out_features = channels * (2 if cfg.head_pool == "avgmax" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.proj(x), self.pool)


class TaskClassifiers(nn.Module):
    """Shared pooled feature vector [+ tabular MLP output] -> one small MLP per task.

    Returns (forward):
        (logits per task (B, K), embedding per task: the input of the last linear layer).
    """

    def __init__(self, in_features: int, cfg: NetConfig) -> None:
        super().__init__()
        slope = cfg.negative_slope
        self.tabular_dim = cfg.tabular_dim
        self.tabular: nn.Module | None = None
        joined = in_features
        if cfg.tabular_dim > 0:
            # 002: "50-dimensional SCNA PCA embeddings through a small fully connected network".
            self.tabular = nn.Sequential(
                nn.Linear(cfg.tabular_dim, cfg.tabular_hidden), nn.LeakyReLU(slope),
                nn.Linear(cfg.tabular_hidden, cfg.tabular_hidden), nn.LeakyReLU(slope),
            )
            joined += cfg.tabular_hidden
        self.bodies = nn.ModuleDict()
        self.finals = nn.ModuleDict()
        for task, classes in cfg.tasks.items():
            if cfg.head_hidden > 0:
                self.bodies[task] = nn.Sequential(
                    nn.Dropout(cfg.dropout), nn.Linear(joined, cfg.head_hidden), nn.LeakyReLU(slope),
                    nn.Dropout(cfg.dropout),
                )
                self.finals[task] = nn.Linear(cfg.head_hidden, len(classes))
            else:
                self.bodies[task] = nn.Dropout(cfg.dropout)
                self.finals[task] = nn.Linear(joined, len(classes))

    def forward(self, features: torch.Tensor, tabular: torch.Tensor | None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if self.tabular is not None:
            if tabular is None:
                # Tabular inputs are PCA scores (centred), so zeros = mean imputation for a
                # patient without genomic data.
                tabular = features.new_zeros(features.shape[0], self.tabular_dim)
            features = torch.cat([features, self.tabular(tabular.to(features.dtype))], dim=1)
        logits, embeddings = {}, {}
        for task, body in self.bodies.items():
            emb = body(features)
            embeddings[task] = emb
            logits[task] = self.finals[task](emb)
        return logits, embeddings


class MultiTaskNet(nn.Module):
    """Segmentation (+ distance map) (+ genotype) network built from a `NetConfig`.

    Args:
        config: a `NetConfig` (or use `build_network` with a plain dict).

    Example:
        >>> net = MultiTaskNet(NetConfig(features=(8, 16, 32), tasks=["idh"]))
        >>> out = net(torch.zeros(1, 4, 32, 32, 32))
        >>> out["seg"].shape, out["genotype"]["idh"].shape
        (torch.Size([1, 4, 32, 32, 32]), torch.Size([1, 2]))
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        if not isinstance(config, NetConfig):
            raise TypeError(f"MultiTaskNet expects a NetConfig, got {type(config).__name__}; use build_network(dict)")
        self.config = config
        # Training-time gradient stops (seg_summary, gate_detach). False gives the exact gradient of
        # the outputs with respect to the input (integrated gradients, GliomaMTLLib.inference.task_logits);
        # the outputs are the same either way.
        self.detach_summaries = True
        f = config.features
        self.encoder = Encoder(config.in_channels, f, config)
        self.decoder = Decoder(f, config.num_seg_classes, config)
        self.dist_decoder = Decoder(f, config.dist_channels, config) if config.distance_decoder else None
        self.head_style = config.head_style
        self.gate_encoder: Encoder | None = None
        self.projections = nn.ModuleList()
        self.classifiers: TaskClassifiers | None = None
        if config.tasks:
            if config.head_style == "bottleneck":
                channels = [f[-1]]
            elif config.head_style == "multilevel":
                channels = [f[i] for i in self._multilevel_indices(len(f))]
            else:  # seggated
                self.gate_encoder = Encoder(config.in_channels, config.gate_features, config)
                channels = list(config.gate_features[-2:])
            self.projections = nn.ModuleList(PooledProjection(c, config) for c in channels)
            pooled = sum(p.out_features for p in self.projections)
            if config.seg_summary:
                pooled += config.num_seg_classes
            self.classifiers = TaskClassifiers(pooled, config)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split into ``"backbone"`` (encoder, seg decoder, distance decoder) and
        ``"genotype"`` (gated encoder, projections, classifiers, tabular MLP), e.g. for 001's
        separate learning rates (1e-4 backbone and seg output, 5e-5 IDH output block)."""
        genotype_modules = [m for m in (self.gate_encoder, self.projections, self.classifiers) if m is not None]
        genotype_ids = {id(p) for m in genotype_modules for p in m.parameters()}
        return {
            "backbone": [p for p in self.parameters() if id(p) not in genotype_ids],
            "genotype": [p for p in self.parameters() if id(p) in genotype_ids],
        }

    @staticmethod
    def _multilevel_indices(depth: int) -> list[int]:
        """Resolution levels read by the multi-level head: the three coarsest decoder outputs
        (001 reads three decoder levels); for a net with fewer than three decoder levels the
        bottleneck fills in."""
        decoder_levels = list(range(depth - 2, -1, -1))  # coarsest first
        levels = decoder_levels[:3]
        if len(levels) < 3:
            levels = [depth - 1] + levels
        return levels

    def check_input(self, x: torch.Tensor) -> None:
        """Raise `ValueError` unless ``x`` is (B, in_channels, z, y, x) with sizes this net accepts."""
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"MultiTaskNet expects a 5-D tensor (B, C, z, y, x), got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"MultiTaskNet expects {cfg.in_channels} input channel(s), got {x.shape[1]}")
        m = cfg.size_multiple
        spatial = tuple(x.shape[2:])
        if any(s % m or s == 0 for s in spatial):
            raise ValueError(
                f"spatial size {spatial} is not a multiple of {m} = 2**(len(features)-1) for features "
                f"{list(cfg.features)}; pad the input (e.g. monai.transforms.DivisiblePad(k={m}))"
            )
        deepest = [s // m for s in spatial]
        if deepest[0] * deepest[1] * deepest[2] < 2:
            raise ValueError(
                f"spatial size {spatial} leaves a single voxel at the deepest level ({m}x downsampling); "
                "instance norm needs at least two: use a larger input or fewer levels"
            )

    def forward(
        self,
        x: torch.Tensor,
        tabular: torch.Tensor | None = None,
        with_genotype: bool = True,
        with_dist: bool = True,
        return_embedding: bool = False,
    ) -> dict[str, Any]:
        """Run the network.

        Args:
            x: (B, in_channels, z, y, x) normalized MR channels.
            tabular: (B, tabular_dim) vector, if the config has ``tabular_dim > 0``; None means
                "not available" and is replaced by zeros (the mean of centred PCA scores).
            with_genotype: False runs the seg path only (localizer, speed).
            with_dist: False skips the distance decoder.
            return_embedding: also return each task's last-layer embedding (002: Cox survival
                model on the classification branch's last layer).

        Returns:
            ``{"seg": (B, num_seg_classes, z, y, x) logits, "dist": (B, R, z, y, x) logits (if the
            config has a distance decoder and with_dist), "genotype": {task: (B, K) logits}
            (empty when there are no tasks or with_genotype is False),
            "embedding": {task: (B, E)} (only if return_embedding)}``.

        Raises:
            ValueError: wrong input rank, channel count or spatial size, or a tabular vector of
                the wrong shape.
        """
        self.check_input(x)
        cfg = self.config
        skips = self.encoder(x)
        seg, dec_levels = self.decoder(skips)
        out: dict[str, Any] = {"seg": seg}
        if self.dist_decoder is not None and with_dist:
            out["dist"] = self.dist_decoder(skips)[0]
        genotype: dict[str, torch.Tensor] = {}
        embedding: dict[str, torch.Tensor] = {}
        if self.classifiers is not None and with_genotype:
            if tabular is not None:
                if cfg.tabular_dim == 0:
                    raise ValueError("a tabular vector was given but the network has tabular_dim = 0")
                if tabular.ndim != 2 or tabular.shape != (x.shape[0], cfg.tabular_dim):
                    raise ValueError(
                        f"tabular must have shape (B, tabular_dim) = ({x.shape[0]}, {cfg.tabular_dim}), "
                        f"got {tuple(tabular.shape)}"
                    )
            if self.head_style == "bottleneck":
                maps = [skips[-1]]
            elif self.head_style == "multilevel":
                # by resolution level: decoder output k (coarsest first) is level depth-2-k
                by_level = {cfg.depth - 2 - k: t for k, t in enumerate(dec_levels)}
                by_level[cfg.depth - 1] = skips[-1]
                maps = [by_level[i] for i in self._multilevel_indices(cfg.depth)]
            else:
                maps = self._gated_maps(x, seg)
            pooled = torch.cat([proj(m) for proj, m in zip(self.projections, maps)], dim=1)
            if cfg.seg_summary:
                pooled = torch.cat([pooled, seg_composition(seg, detach=self.detach_summaries)], dim=1)
            genotype, embedding = self.classifiers(pooled, tabular)
        out["genotype"] = genotype
        if return_embedding:
            out["embedding"] = embedding
        return out

    def _gated_maps(self, x: torch.Tensor, seg_logits: torch.Tensor) -> list[torch.Tensor]:
        """000: the predicted tumor probability P(WT) = 1 - p(background) gates the input of a
        second encoder; its two deepest levels feed the genotype head."""
        p_wt = 1.0 - torch.softmax(seg_logits, dim=1)[:, :1]
        if self.config.gate_detach and self.detach_summaries:
            p_wt = p_wt.detach()
        assert self.gate_encoder is not None
        levels = self.gate_encoder(x * p_wt)
        return levels[-2:]


def build_network(config: Mapping[str, Any] | NetConfig) -> MultiTaskNet:
    """Build a `MultiTaskNet` from a plain dict (as stored in ``model.json``) or a `NetConfig`.

    Raises:
        ValueError: unknown keys or bad values (see `NetConfig.from_dict`).
    """
    cfg = config if isinstance(config, NetConfig) else NetConfig.from_dict(config)
    return MultiTaskNet(cfg)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of a module."""
    return sum(p.numel() for p in module.parameters())


def parameter_megabytes(module: nn.Module) -> float:
    """Size of the parameters and buffers as float32, in MB (10^6 bytes)."""
    n = count_parameters(module) + sum(b.numel() for b in module.buffers())
    return n * 4 / 1e6
