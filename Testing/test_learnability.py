"""Learnability: a genotype trivially encoded in tiny phantoms must be learned by every CNN head
style (bottleneck 002/003, multilevel 001, seggated 000) and by the radiological-feature path.

The encoding: a ball tumor (bright in channel 0, its label for the segmentation) whose inside is
also bright in channel 1 ("enhancing") when the genotype is mutant and not otherwise. A head that
cannot reach the training AUC 0.9 in 60 iterations on 12^3 volumes is broken (wrong pooling,
no gradient, gate of the wrong sign...). One CPU thread, a few seconds per head.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from GliomaMTLLib.metrics.classification import roc_auc
from GliomaMTLLib.nets import MultiTaskNet, NetConfig

SIZE = 12
TASKS = {"idh": ("wildtype", "mutant")}


def _phantoms(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (n, 2, S, S, S), seg labels (n, S, S, S), genotype (n,)) with the trivial encoding."""
    rng = np.random.default_rng(seed)
    g = np.indices((SIZE,) * 3).astype(np.float32)
    images = np.zeros((n, 2, SIZE, SIZE, SIZE), np.float32)
    labels = np.zeros((n, SIZE, SIZE, SIZE), np.int64)
    y = np.arange(n) % 2
    rng.shuffle(y)
    for i in range(n):
        c = rng.uniform(5, SIZE - 5, 3)
        r = rng.uniform(2.5, 4.0)
        ball = ((g - c[:, None, None, None]) ** 2).sum(0) <= r * r
        labels[i] = ball
        images[i, 0] = ball * 1.5
        images[i, 1] = ball * (1.5 if y[i] else 0.0)
    images += rng.normal(0, 0.3, images.shape).astype(np.float32)
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(y)


def _train_auc(style: str, iterations: int = 60) -> float:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = NetConfig(in_channels=2, num_seg_classes=2, features=(4, 8), head_style=style, tasks=dict(TASKS),
                    head_hidden=8, head_pool="avgmax")
    net = MultiTaskNet(cfg)
    x, seg, y = _phantoms(32, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(iterations):
        idx = torch.from_numpy(rng.choice(len(x), 8, replace=False))
        out = net(x[idx])
        loss = torch.nn.functional.cross_entropy(out["seg"], seg[idx]) + \
            torch.nn.functional.cross_entropy(out["genotype"]["idh"], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        scores = torch.softmax(net(x)["genotype"]["idh"], dim=1)[:, 1].numpy()
    return roc_auc(y.numpy() == 1, scores)


@pytest.mark.parametrize("style", ["bottleneck", "multilevel", "seggated"])
def test_cnn_head_learns_trivial_genotype(style: str) -> None:
    assert _train_auc(style) > 0.9


def test_broken_head_fails_the_same_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a head whose pooling is broken (it sees zeros, not the image) stays
    below the bar after the same training."""
    import GliomaMTLLib.nets.multitask as multitask

    real = multitask.global_pool
    monkeypatch.setattr(multitask, "global_pool", lambda x, mode: torch.zeros_like(real(x, mode)))
    assert _train_auc("bottleneck", iterations=30) < 0.9


def test_feature_path_learns_trivial_genotype() -> None:
    """Soft segmentations with an enhancing core (wildtype) or none (mutant): features -> fit ->
    torch inference of the stored path reaches training AUC > 0.9 and matches scikit-learn."""
    from GliomaMTLLib.genotype.features import FEATURE_NAMES, radiological_features
    from GliomaMTLLib.genotype.fit import fit_standardization, fit_task
    from GliomaMTLLib.genotype.model import KIND, FeatureGenotypePath

    rng = np.random.default_rng(3)
    g = np.indices((SIZE,) * 3).astype(np.float32)
    feats, ys, inputs = [], [], []
    for i in range(40):
        y = i % 2  # 1 = mutant: no enhancement
        c = rng.uniform(5.5, SIZE - 5.5, 3)
        d = np.sqrt(((g - c[:, None, None, None]) ** 2).sum(0))
        r = rng.uniform(2.5, 3.5)
        core = 1 / (1 + np.exp((d - r) / 0.7))
        edema = 1 / (1 + np.exp((d - r - 2.0) / 0.7)) - core
        rim = core * (1 / (1 + np.exp(-(d - r + 1.5) / 0.5)))
        et = rim * (0.9 if y == 0 else 0.05) * rng.uniform(0.7, 1.0)
        probs = np.stack([1 - core - edema, core - et, edema, et]).astype(np.float32)
        image = rng.normal(0, 0.3, (4, SIZE, SIZE, SIZE)).astype(np.float32)
        depth = np.full((SIZE,) * 3, 20.0, np.float32)
        position = np.zeros((3, SIZE, SIZE, SIZE), np.float32)
        t = [torch.from_numpy(a) for a in (probs, image, depth, position)]
        inputs.append(t)
        feats.append(radiological_features(*t, (1.0, 1.0, 1.0)).double().numpy())
        ys.append(y)
    x, y = np.asarray(feats), np.asarray(ys)
    mean, scale = fit_standardization(x)
    reg, _ = fit_task((x - mean) / scale, y, TASKS["idh"])
    spec = {"kind": KIND, "features": list(FEATURE_NAMES), "mean": mean.tolist(), "scale": scale.tolist(),
            "tasks": {"idh": reg.to_dict()}}
    path = FeatureGenotypePath(spec, ("t1n", "t1c", "t2w", "t2f"))
    with torch.no_grad():
        scores = np.array([float(torch.softmax(path(*t, (1.0, 1.0, 1.0))["idh"].double(), -1)[1]) for t in inputs])
    assert roc_auc(y == 1, scores) > 0.9
