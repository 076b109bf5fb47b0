"""Tests of GliomaMTLLib.nets: shapes, options, gradients, size checks and NetConfig round trips."""

from __future__ import annotations

import json

import pytest
import torch

from GliomaMTLLib.labels import GENOTYPE_TASKS
from GliomaMTLLib.nets import (
    HEAD_STYLES,
    MultiTaskNet,
    NetConfig,
    build_network,
    count_parameters,
    crop_config,
    label_map,
    localizer_config,
    parameter_megabytes,
    region_probabilities,
)

TINY = (4, 8, 16)  # depth 3: sizes must be multiples of 4
ALL_TASKS = list(GENOTYPE_TASKS)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_net(**kwargs) -> MultiTaskNet:
    torch.manual_seed(0)
    cfg = {"features": list(TINY), "tasks": ALL_TASKS, "head_hidden": 8, "tabular_hidden": 4}
    cfg.update(kwargs)
    return build_network(cfg)


@pytest.mark.parametrize("head_style", HEAD_STYLES)
@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("tabular_dim", [0, 5])
def test_output_shapes(head_style, in_channels, tabular_dim):
    net = tiny_net(head_style=head_style, in_channels=in_channels, tabular_dim=tabular_dim, distance_decoder=True)
    shape = (20, 12, 28)  # odd-ish multiples of 4 = 2 ** (depth - 1)
    x = torch.randn(2, in_channels, *shape)
    tab = torch.randn(2, tabular_dim) if tabular_dim else None
    out = net(x, tabular=tab, return_embedding=True)
    assert out["seg"].shape == (2, 4, *shape)
    assert out["dist"].shape == (2, 3, *shape)
    assert set(out["genotype"]) == set(ALL_TASKS)
    for task, classes in GENOTYPE_TASKS.items():
        assert out["genotype"][task].shape == (2, len(classes))
        assert out["embedding"][task].shape == (2, 8)
    assert all(torch.isfinite(t).all() for t in [out["seg"], out["dist"], *out["genotype"].values()])


@pytest.mark.parametrize("head_style", HEAD_STYLES)
def test_light_top_shapes_and_gradients(head_style):
    net = tiny_net(head_style=head_style, light_top=True, distance_decoder=True)
    plain = tiny_net(head_style=head_style, distance_decoder=True)
    assert count_parameters(net) < count_parameters(plain)
    out = net(torch.randn(2, 4, 12, 20, 16))
    assert out["seg"].shape == (2, 4, 12, 20, 16) and out["dist"].shape == (2, 3, 12, 20, 16)
    out["genotype"]["braf"].sum().backward()
    assert _backbone_grad(net) > 0


def test_missing_tabular_vector_is_mean_imputed():
    net = tiny_net(tabular_dim=5).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        a = net(x)["genotype"]["idh"]
        b = net(x, tabular=torch.zeros(1, 5))["genotype"]["idh"]
        c = net(x, tabular=torch.ones(1, 5))["genotype"]["idh"]
    assert torch.allclose(a, b)
    assert not torch.allclose(a, c)


def test_tabular_errors():
    x = torch.randn(1, 4, 16, 16, 16)
    with pytest.raises(ValueError, match="tabular"):
        tiny_net(tabular_dim=5)(x, tabular=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="tabular_dim = 0"):
        tiny_net()(x, tabular=torch.zeros(1, 5))


def test_seg_only_paths():
    net = tiny_net(distance_decoder=True)
    x = torch.randn(1, 4, 16, 16, 16)
    out = net(x, with_genotype=False, with_dist=False)
    assert set(out) == {"seg", "genotype"} and out["genotype"] == {}
    loc = MultiTaskNet(localizer_config(features=TINY))
    assert loc.classifiers is None
    out = loc(torch.randn(1, 4, 12, 16, 8))
    assert out["seg"].shape == (1, 4, 12, 16, 8) and out["genotype"] == {}


def test_flair_only_two_class_model():
    net = build_network({"in_channels": 1, "num_seg_classes": 2, "features": list(TINY), "tasks": ["braf"],
                         "distance_decoder": True})
    out = net(torch.randn(1, 1, 16, 16, 16))
    assert out["seg"].shape == (1, 2, 16, 16, 16)
    assert out["dist"].shape == (1, 1, 16, 16, 16)  # one region (WT) for a 2-class model
    assert out["genotype"]["braf"].shape == (1, 3)


@pytest.mark.parametrize("shape, match", [
    ((1, 4, 16, 18, 16), "multiple of 4"),
    ((1, 4, 4, 4, 4), "single voxel"),
    ((1, 3, 16, 16, 16), "input channel"),
    ((4, 16, 16, 16), "5-D"),
])
def test_input_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_net()(torch.randn(*shape))


def _backbone_grad(net: MultiTaskNet) -> float:
    grad = next(net.encoder.blocks[0].parameters()).grad  # the first conv's weight
    return 0.0 if grad is None else float(grad.abs().sum())


@pytest.mark.parametrize("head_style", HEAD_STYLES)
def test_genotype_gradients_reach_backbone(head_style):
    net = tiny_net(head_style=head_style)
    x = torch.randn(2, 4, 16, 16, 16)
    for task in ALL_TASKS:
        net.zero_grad(set_to_none=False)
        out = net(x)
        target = torch.zeros(2, dtype=torch.long)
        torch.nn.functional.cross_entropy(out["genotype"][task], target).backward()
        assert _backbone_grad(net) > 0, f"{head_style}/{task}: no gradient at the first encoder conv"
    if head_style == "multilevel":
        assert float(net.decoder.ups[-1].conv_block.conv1.conv.weight.grad.abs().sum()) > 0


def test_seggated_gate_detach_blocks_backbone_gradient():
    net = tiny_net(head_style="seggated", gate_detach=True)
    net.zero_grad(set_to_none=False)
    out = net(torch.randn(2, 4, 16, 16, 16))
    out["genotype"]["idh"].sum().backward()
    assert _backbone_grad(net) == 0
    assert float(next(net.gate_encoder.blocks[0].parameters()).grad.abs().sum()) > 0


def test_region_probabilities_nested_and_label_map():
    logits = torch.randn(2, 4, 6, 6, 6)
    r = region_probabilities(logits)
    wt, tc, et = r[:, 0], r[:, 1], r[:, 2]
    assert torch.all(et <= tc + 1e-6) and torch.all(tc <= wt + 1e-6)
    p = torch.softmax(logits, 1)
    assert torch.allclose(wt, 1 - p[:, 0], atol=1e-6)
    assert torch.allclose(tc, p[:, 1] + p[:, 3], atol=1e-6)
    assert torch.equal(label_map(logits), logits.argmax(1))


def test_netconfig_round_trip():
    cfg = NetConfig(in_channels=1, features=(8, 16, 32, 64), head_style="seggated",
                    tasks={"idh": ("wildtype", "mutant"), "braf": ("fusion", "v600e", "other")},
                    distance_decoder=True, tabular_dim=50, dropout=0.2, norm="batch", light_top=True)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert NetConfig.from_dict(data) == cfg
    assert data["features"] == [8, 16, 32, 64] and data["tasks"]["braf"] == ["fusion", "v600e", "other"]
    assert NetConfig.from_dict({"tasks": ["idh"]}).tasks == {"idh": ("wildtype", "mutant")}
    assert isinstance(build_network(cfg.to_dict()), MultiTaskNet)
    assert isinstance(build_network(cfg), MultiTaskNet)


@pytest.mark.parametrize("data, match", [
    ({"feature": [8, 16]}, r"unknown key\(s\) \['feature'\]"),
    ({"head_style": "transformer"}, "unknown head style 'transformer'"),
    ({"tasks": ["mgmt"]}, "unknown genotype task 'mgmt'"),
    ({"tasks": {"idh": ["mutant", "wildtype"]}}, "differ from"),
    ({"features": [8]}, "features"),
    ({"features": [8, 0]}, "features"),
    ({"in_channels": True}, "in_channels"),
    ({"num_seg_classes": 1}, "num_seg_classes"),
    ({"dropout": 1.5}, "dropout"),
    ({"head_pool": "sum"}, "head_pool"),
    ({"norm": "group"}, "norm"),
    ({"distance_decoder": "yes"}, "distance_decoder"),
    ({"light_top": 1}, "light_top"),
    ({"features": [4, 8], "gate_features": [4, 8, 16]}, "gate_features"),
])
def test_netconfig_errors(data, match):
    with pytest.raises(ValueError, match=match):
        NetConfig.from_dict(data)


def test_recommended_configs_fit_the_weight_budget():
    loc = MultiTaskNet(localizer_config())
    crop = MultiTaskNet(crop_config(tasks=ALL_TASKS, head_style="seggated", distance_decoder=True, tabular_dim=50))
    assert count_parameters(loc) < count_parameters(crop)
    assert parameter_megabytes(loc) < 50 and parameter_megabytes(crop) < 50


@pytest.mark.parametrize("head_style", HEAD_STYLES)
def test_parameter_groups_partition_the_parameters(head_style):
    net = tiny_net(head_style=head_style, tabular_dim=3, distance_decoder=True)
    groups = net.parameter_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert {id(p) for p in net.encoder.parameters()} <= {id(p) for p in groups["backbone"]}
    assert {id(p) for p in net.classifiers.parameters()} <= {id(p) for p in groups["genotype"]}


def test_seg_composition_is_the_soft_tumor_make_up():
    from GliomaMTLLib.nets.multitask import seg_composition

    logits = torch.full((2, 4, 2, 2, 2), -30.0)
    logits[:, 0] = 30.0  # background everywhere ...
    logits[0, :, 0, 0, 0] = torch.tensor([-30.0, -30.0, -30.0, 30.0])  # ... but one ET voxel
    logits[0, :, 0, 0, 1] = torch.tensor([-30.0, 30.0, -30.0, -30.0])  # and one NCR voxel in case 0
    logits.requires_grad_(True)
    comp = seg_composition(logits)
    assert comp.shape == (2, 4) and comp.grad_fn is None  # detached: no genotype gradient into seg
    assert torch.allclose(comp[0], torch.tensor([2 / 8, 0.5, 0.0, 0.5]), atol=1e-6)
    assert torch.allclose(comp[1], torch.zeros(4), atol=1e-6)  # no tumor: all zeros, no NaN


@pytest.mark.parametrize("head_style", ["bottleneck", "seggated"])
def test_seg_summary_widens_the_heads_and_changes_their_output(head_style):
    cfg = dict(in_channels=4, features=[4, 8, 16], head_style=head_style, head_hidden=8,
               tasks={"idh": ["wildtype", "mutant"]})
    plain, summary = build_network(cfg), build_network({**cfg, "seg_summary": True})
    first = summary.classifiers.bodies["idh"][1]
    assert first.in_features == plain.classifiers.bodies["idh"][1].in_features + 4
    assert NetConfig.from_dict(summary.config.to_dict()).seg_summary is True
    x = torch.randn(2, 4, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    summary.eval()
    with torch.no_grad():
        base = summary(x)["genotype"]["idh"]
        first.weight[:, -4:] += 1.0  # the composition columns take part in the logits
        assert not torch.allclose(summary(x)["genotype"]["idh"], base)
