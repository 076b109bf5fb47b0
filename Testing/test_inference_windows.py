"""Sliding windows without MONAI (GliomaMTLLib.inference.windows) agree with MONAI's
``sliding_window_inference(mode="gaussian")``, which predict used before (it cost ~3 s of import)."""

from __future__ import annotations

import pytest
import torch

from GliomaMTLLib.inference.windows import importance_map, sliding_window_probs, window_starts


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.Softmax(dim=1)).eval()


@pytest.mark.parametrize("shape, window, overlap", [
    ((40, 37, 52), (16, 16, 16), 0.25),  # several windows, last one flush with the end
    ((20, 12, 30), (16, 16, 16), 0.5),  # y shorter than the window: zero-padded
    ((16, 16, 16), (16, 16, 16), 0.25),  # exactly one window
    ((33, 18, 17), (8, 12, 16), 0.6),
])
def test_matches_monai_sliding_window_inference(shape, window, overlap):
    from monai.inferers import sliding_window_inference

    net = _net()
    x = torch.randn(1, 2, *shape)
    with torch.no_grad():
        ours = sliding_window_probs(x, window, net, overlap=overlap, batch_size=2)
        theirs = sliding_window_inference(x, roi_size=window, sw_batch_size=2, predictor=net, overlap=overlap,
                                          mode="gaussian")
    assert ours.shape == theirs.shape == (1, 3, *shape)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours.sum(dim=1), torch.ones(shape), atol=1e-5)  # a blend of softmaxes stays one


def test_window_placement_and_weights():
    assert window_starts(64, 64, 0.25) == [0]
    assert window_starts(100, 64, 0.25) == [0, 36]  # step 48 would overrun: the last window is flush
    assert window_starts(200, 64, 0.5) == [0, 32, 64, 96, 128, 136]
    w = importance_map((8, 9, 10))
    assert w.shape == (8, 9, 10) and float(w.min()) > 0
    assert float(w[4, 4, 5]) > float(w[0, 4, 5])  # heavier in the middle
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(2))  # symmetric


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x must be \(1, C, z, y, x\); got \(2, 1, 4, 4, 4\)"):
        sliding_window_probs(torch.zeros(2, 1, 4, 4, 4), (4, 4, 4), lambda t: t)
    with pytest.raises(ValueError, match="window must be three positive sizes"):
        sliding_window_probs(torch.zeros(1, 1, 4, 4, 4), (4, 0, 4), lambda t: t)
