"""The papers' claims check (training/claims.py): variants, paired differences, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from GliomaMTLLib.train.claims import HEAD_VARIANTS, VARIANTS, main, paired_difference, variant_recipe


def test_each_variant_changes_only_its_design_choice():
    base = variant_recipe(next(v for v in VARIANTS if v.name == "seggated_uncertainty"), seed=0)
    by_name = {v.name: variant_recipe(v, seed=0) for v in VARIANTS}
    assert by_name["seg_only"]["tasks"] == {} and by_name["seg_only"]["stages"]["main"]["network"]["tasks"] == {}
    assert by_name["wholebrain_uncertainty"]["stages"]["main"]["network"]["head_style"] == "bottleneck"
    assert base["stages"]["main"]["network"]["head_style"] == "seggated"
    assert by_name["seggated_dynamic"]["stages"]["main"]["loss"]["weighting"] == {"type": "dynamic"}
    assert by_name["seggated_fixed"]["stages"]["main"]["loss"]["weighting"]["weights"] == {
        "seg": 1.0, "idh": 0.3, "codel_1p19q": 0.3}
    for name, recipe in by_name.items():  # same data and schedule everywhere
        assert recipe["data"] == base["data"], name
        assert recipe["stages"]["main"]["phases"] == base["stages"]["main"]["phases"], name
    assert variant_recipe(VARIANTS[0], seed=3)["seed"] == 3


def test_head_variants_train_only_the_head_on_the_seeds_single_task_network(tmp_path):
    for variant, style in zip(HEAD_VARIANTS, ("seggated", "multilevel", "bottleneck")):
        recipe = variant_recipe(variant, seed=2, runs=tmp_path)
        main_stage = recipe["stages"]["main"]
        assert main_stage["init"] == str(tmp_path / "seg_only-seed2")
        assert main_stage["network"]["head_style"] == style
        (phase,) = main_stage["phases"]
        assert phase["genotype"] and phase["balance"] == "idh"
        assert phase["freeze"] == ["encoder.*", "decoder.*"]
        assert phase["augment"]["sequence_dropout"] == 0.0 and phase["augment"]["contrast_prob"] == 0.0


def test_paired_difference_uses_shared_cases_only():
    a = {"c1": 0.5, "c2": 0.7, "only_a": 0.0}
    b = {"c1": 0.6, "c2": 0.9, "only_b": 1.0}
    mean, lo, hi = paired_difference(a, b, n_boot=500)
    assert mean == pytest.approx(0.15)
    assert 0.1 - 1e-12 <= lo <= mean <= hi <= 0.2 + 1e-12
    assert all(np.isnan(v) for v in paired_difference({"x": 1.0}, {"y": 1.0}))


def test_claims_command_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIOMAMTL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    assert main(["--smoke", "--out", str(out), "--runs", str(tmp_path / "runs"),
                 "--variants", "seg_only", "seggated_linear", "heads_bottleneck"]) == 0
    table = (out / "claims.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| seg", "| heads"))]
    assert [r.split("|")[1].strip() for r in rows] == ["seg_only", "seggated_linear", "heads_bottleneck"]
    assert "joint 2 it" in table and "4 test cases" in table
    data = json.loads((out / "claims.json").read_text())
    linear = next(r for r in data["rows"] if r["variant"] == "seggated_linear")
    assert linear["delta_WT"].startswith(("+", "-")) and 0.0 <= linear["dice_WT"] <= 1.0
    assert np.isnan(data["rows"][0]["auc_idh"]) and 0.0 <= linear["auc_idh"] <= 1.0
    # the head trained on the frozen single-task network: its segmentation is seg_only's, to the voxel
    head = next(r for r in data["rows"] if r["variant"] == "heads_bottleneck")
    assert head["dice_WT"] == data["rows"][0]["dice_WT"] and head["delta_WT"] == "+0.000 [+0.000, +0.000]"
    assert 0.0 <= head["auc_idh"] <= 1.0
