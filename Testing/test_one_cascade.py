"""One cascade: evaluation, calibration and the user's prediction run the same code.

A run folder with tiny random networks (the smoke adult recipe: localizer at 4 mm, main stage on
a crop) is evaluated with `GliomaMTLLib.train.evaluate`, predicted with
`GliomaMTLLib.inference.Predictor` from the run folder, and predicted again from the exported
bundle: the label maps must be identical, and the Dice in the evaluation's tables must be the Dice
of the Predictor's labels.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from GliomaMTLLib.inference import Predictor
from GliomaMTLLib.metrics import region_metrics
from GliomaMTLLib.train.config import dump_recipe, load_recipe
from GliomaMTLLib.train.data import list_case_specs, load_case


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished-looking run: recipe.yaml and random (seeded) weights for each stage."""
    from GliomaMTLLib.nets import build_network
    from GliomaMTLLib.train.checkpoint import save_stage_weights

    base = tmp_path_factory.mktemp("one_cascade")
    recipe = load_recipe("gliomamtl_adult", [f"data.cache_dir={base / 'cache'}"], smoke=True)
    run = base / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(dump_recipe(recipe))
    for i, (stage, conf) in enumerate(recipe["stages"].items()):
        torch.manual_seed(100 + i)
        save_stage_weights(run, stage, build_network(conf["network"]).state_dict())
    return run


def _test_cases(run):
    recipe = load_recipe(run / "recipe.yaml")
    return recipe, [load_case(s, recipe["sequences"]) for s in list_case_specs(recipe) if s.split == "test"]


def test_evaluate_scores_exactly_the_predictors_labels(run_dir, tmp_path):
    from GliomaMTLLib.train.evaluate import evaluate_run, predict_split, run_predictor, load_run

    recipe, cases = _test_cases(run_dir)
    assert len(cases) == 2
    predictor = Predictor(run_dir, device="cpu", engine="torch")  # a run folder, before any export
    assert predictor.bundle.meta["weights"]["run"] == str(run_dir)
    user = {c.case_id: predictor.predict(c) for c in cases}

    # evaluate's own results: the same label maps, case by case
    _, bundle = load_run(run_dir)
    evaluated = predict_split(recipe, run_predictor(bundle), "test")
    assert [r.case_id for r in evaluated] == list(user)
    for r in evaluated:
        assert r.labels.shape == user[r.case_id].labels.shape == r.reference.shape  # the case's input grid
        assert np.array_equal(r.labels, user[r.case_id].labels), r.case_id
    assert any(r.labels.any() for r in evaluated)  # random networks still label something here

    # and the tables written by evaluate_run hold the Dice of those labels
    metrics = evaluate_run(run_dir, tmp_path / "eval")
    assert metrics["info"]["inference"] == "GliomaMTLLib.inference.Predictor"
    with open(tmp_path / "eval" / "segmentation_cases.csv") as handle:
        rows = {(r["case_id"], r["region"]): float(r["dice"]) for r in csv.DictReader(handle)}
    for case in cases:
        expected = region_metrics(user[case.case_id].labels, case.label, case.geometry.spacing)
        for region, values in expected.items():
            got = rows[(case.case_id, region)]
            assert (math.isnan(got) and math.isnan(values["dice"])) or got == pytest.approx(values["dice"], abs=1e-9)


def test_the_exported_bundle_predicts_what_the_run_predicted(run_dir, tmp_path):
    from GliomaMTLLib.train.export import export_run

    _, cases = _test_cases(run_dir)
    folder = export_run(run_dir, tmp_path / "bundle", evaluate=False)
    from_run = Predictor(run_dir, device="cpu", engine="torch")
    from_bundle = Predictor(folder, device="cpu", engine="torch")
    for case in cases:
        a, b = from_run.predict(case), from_bundle.predict(case)
        assert np.array_equal(a.labels, b.labels)
        assert a.tumor["windows"] == b.tumor["windows"]
    # the sequence roles travel from the recipe (export.required_sequences) into model.json
    assert from_bundle.required_sequences == from_run.required_sequences
    assert from_bundle.optional_sequences == from_run.optional_sequences
    assert set(from_bundle.required_sequences) | set(from_bundle.optional_sequences) == set(from_bundle.sequences)


def test_a_run_folder_without_weights_is_a_clear_error(run_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="has no finished weights"):
        Predictor(broken, device="cpu", engine="torch")


def test_evaluate_drops_sequences_as_asked(run_dir):
    from GliomaMTLLib.train.evaluate import keep_sequences, parse_sequences

    _, cases = _test_cases(run_dir)
    assert parse_sequences("T1ce, flair") == ["t1c", "t2f"]
    with pytest.raises(ValueError, match="unknown sequence 'dwi'"):
        parse_sequences("t1c,dwi")
    kept = keep_sequences(cases[0], ["t1c", "t2f"])
    assert set(kept.images) == {"t1c", "t2f"} and set(cases[0].images) == {"t1n", "t1c", "t2w", "t2f"}
    assert kept.label is cases[0].label


def test_evaluate_several_sequence_subsets_in_one_pass(tmp_path):
    from GliomaMTLLib.inference import make_random_bundle
    from GliomaMTLLib.train.evaluate import evaluate_bundle

    folder = tmp_path / "bundle"
    make_random_bundle(folder, main_features=(4, 8), crop_size=(32, 32, 32), localizer_features=(4, 8),
                       input_size=(32, 32, 32), required_sequences=["t2f"])
    out = tmp_path / "subsets"
    metrics = evaluate_bundle(folder, "synth:adult:n=1:seed=42:small", out, device="cpu",
                              subsets=[None, ["t1c", "t2f"], ["t2f"]])
    assert list(metrics["subsets"]) == ["all", "t1c+t2f", "t2f"]
    for key in ("all", "t1c+t2f", "t2f"):
        assert (out / key / "report.md").is_file() and (out / key / "segmentation_cases.csv").is_file()
        assert metrics["subsets"][key]["info"]["sequences"] == key
    table = (out / "subsets.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "Dice" not in line] \
        == ["all", "t1c+t2f", "t2f"]
