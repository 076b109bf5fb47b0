"""Fitting the radiological-feature path (GliomaMTLLib.train.genotype_fit.fit_and_measure) on
feature matrices with a known signal: conditional 1p/19q, constant features left out, honest
metrics on the untouched test split."""

from __future__ import annotations

import numpy as np
import torch

from GliomaMTLLib.genotype.features import FEATURE_NAMES
from GliomaMTLLib.genotype.model import FeatureGenotypePath
from GliomaMTLLib.train.genotype_fit import check_against, fit_and_measure

TASKS = {"idh": ("wildtype", "mutant"), "codel_1p19q": ("intact", "codeleted")}


def _split(n: int, rng: np.random.Generator) -> dict:
    f = len(FEATURE_NAMES)
    mutant = rng.random(n) < 0.4
    codel = mutant & (rng.random(n) < 0.4)  # as in WHO CNS5: codeletion only in IDH-mutant tumours
    x = rng.normal(size=(n, f))
    x[:, 0] += 2.5 * mutant  # IDH signal (alone: AUC ~0.96)
    x[:, 1] += 2.5 * codel  # codeletion signal, visible among the mutants
    x[:, 2] = 7.0  # a feature constant on every phantom (e.g. core features of a whole-tumor model)
    meta = [{"found": True, "survival_days": 100.0, "event": 1} for _ in range(n)]
    return {"ids": [f"c{i}" for i in range(n)], "X": x,
            "y": {"idh": mutant.astype(int), "codel_1p19q": codel.astype(int)},
            "cnn": {t: np.zeros((n, 2)) for t in TASKS}, "meta": meta}


def test_conditional_fit_is_consistent_and_learns_a_known_signal() -> None:
    rng = np.random.default_rng(0)
    data = {"train": _split(150, rng), "val": _split(100, rng), "test": _split(150, rng)}
    result = fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=lambda m: None)
    spec = result["spec"]
    assert FEATURE_NAMES[2] not in spec["features"] and len(spec["features"]) == len(FEATURE_NAMES) - 1
    assert spec["tasks"]["codel_1p19q"]["given"] == {"task": "idh", "class": "mutant"}
    assert "given" not in spec["tasks"]["idh"]
    for task in TASKS:
        m = result["metrics"][task]["test"]
        assert m["auc"] > 0.85 and m["auc_ci_low"] > 0.5, (task, m["auc"])
        assert result["status"][task]["available"]
    y_idh, p_idh = result["arrays"]["idh"]["test"]
    _, p_codel = result["arrays"]["codel_1p19q"]["test"]
    assert np.all(p_codel[:, 1] <= p_idh[:, 1] + 1e-9)
    # the stored path gives the same test probabilities as the fit measured
    path = FeatureGenotypePath(spec, ("t1n", "t1c", "t2w", "t2f"))
    with torch.no_grad():
        out = path.task_logits(torch.as_tensor(data["test"]["X"][:, [FEATURE_NAMES.index(n) for n in spec["features"]]]))
    np.testing.assert_allclose(torch.softmax(out["codel_1p19q"], -1)[:, 1].numpy(), p_codel[:, 1], atol=1e-6)


def test_check_against_reports_metric_drift(tmp_path) -> None:
    import json

    from GliomaMTLLib.inference.fixtures import make_random_bundle

    bundle = make_random_bundle(tmp_path / "m")
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta.setdefault("metrics", {})["genotype_path"] = {"idh": {"test": {"auc": 0.90, "ece": 0.05}}}
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    ok = {"idh": {"test": {"auc": 0.88, "ece": 0.06}}}
    assert check_against(ok, bundle.folder, 0.05) == []
    drift = check_against({"idh": {"test": {"auc": 0.80, "ece": 0.06}}, "codel_1p19q": {"test": {"auc": 0.7}}}, bundle.folder, 0.05)
    assert any("idh test auc: 0.800 here, 0.900 stored" in d for d in drift)
    assert any(d.startswith("codel_1p19q: no stored") for d in drift)


def test_headless_fit_counts_lesions_and_declares_its_tasks_in_the_bundle(tmp_path) -> None:
    """A segmentation-only network (no CNN logits in the cache): no CNN comparison; the lesion limit
    comes from the development phantoms' core counts; update_bundle declares the path's tasks."""
    import json

    from GliomaMTLLib.inference.fixtures import make_random_bundle
    from GliomaMTLLib.train.genotype_fit import card_section, cohort_tasks, update_bundle

    rng = np.random.default_rng(4)
    data = {"train": _split(150, rng), "val": _split(100, rng), "test": _split(120, rng)}
    for s, d in data.items():
        d["cnn"] = {}
        counts = np.ones(len(d["ids"]), int)
        counts[:int(0.08 * len(counts))] = 2  # 8% with two cores, 1.6% with three
        counts[:int(0.016 * len(counts)) or 1] = 3
        for m, c in zip(d["meta"], counts):
            m["core_lesions"] = int(c)
    result = fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=lambda m: None)
    lesions = result["spec"]["lesions"]
    assert lesions["max_core_lesions"] == 2  # > 1 core: 8% of development phantoms, > 2: under 5%
    assert 0 < lesions["development_false_alarm_rate"] <= 0.05 and "test_false_alarm_rate" in lesions
    assert result["cnn_metrics"]["idh"] == {}
    section = card_section("m", "9.9.9", result, data, "cmd", (0.35, 0.65), None)
    assert "no genotype heads" in section and "more than 2 also withholds" in section

    assert cohort_tasks("adult") == TASKS
    bundle = make_random_bundle(tmp_path / "m", tasks=())
    update_bundle(bundle.folder, "9.9.9", result, (0.35, 0.65), section, tmp_path)
    meta = json.loads((bundle.folder / "model.json").read_text())
    assert meta["tasks"] == {t: list(c) for t, c in TASKS.items()} and meta["version"] == "9.9.9"
    assert meta["genotype_paths"][0]["lesions"]["max_core_lesions"] == 2
    card = bundle.folder / "card.md"
    card.write_text("# Model card: m 1.0\n\nBody.\n")
    update_bundle(bundle.folder, "9.9.9", result, (0.35, 0.65), section, tmp_path)
    assert card.read_text().startswith(f"# Model card: {meta['name']} 9.9.9\n\n> **9.9.9**: the genotype comes from")
    # a hand-written note for the version survives a refit, and no generic note is added beside it
    card.write_text("# Model card: m 9.9.9\n\n> **9.9.9**: what changed, by hand.\n\nBody.\n")
    update_bundle(bundle.folder, "9.9.9", result, (0.35, 0.65), section, tmp_path)
    text = card.read_text()
    assert "> **9.9.9**: what changed, by hand." in text and "the genotype comes from" not in text.split("## ")[0]
    assert text.count("## Genotype: radiological-feature path") == 1
    from GliomaMTLLib.inference import Predictor

    assert set(Predictor(bundle.folder, device="cpu", engine="torch").tasks) == set(TASKS)
    # collecting a refit's cache with this bundle keeps the network's heads only, not the path's logits
    from GliomaMTLLib.genotype.collect import CapturingPredictor

    assert len(Predictor(bundle.folder, device="cpu", engine="torch").task_logits.paths) == 1
    assert len(CapturingPredictor(bundle.folder, device="cpu", engine="torch").task_logits.paths) == 0


def test_shifted_development_phantoms_join_the_fit_and_held_out_splits_never_do() -> None:
    """``train_shift`` (phantoms rendered with another contrast) is fitted on when asked for; the
    default fit (``train`` + ``val``) ignores it; ``test`` or ``transfer`` as development is refused."""
    import pytest

    from GliomaMTLLib.train.genotype_fit import SPLITS, parse_counts

    rng = np.random.default_rng(7)
    data = {"train": _split(120, rng), "val": _split(80, rng), "train_shift": _split(60, rng), "test": _split(100, rng)}
    quiet = lambda m: None  # noqa: E731
    with_shift = fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=quiet,
                                 development=("train", "val", "train_shift"))
    assert with_shift["spec"]["development_splits"] == ["train", "val", "train_shift"]
    assert with_shift["spec"]["n_development"] == 260
    without = fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=quiet)
    assert without["spec"]["development_splits"] == ["train", "val"] and without["spec"]["n_development"] == 200
    assert without["spec"]["mean"] != with_shift["spec"]["mean"]  # standardized on different pools
    with pytest.raises(ValueError, match=r"include a held-out split"):
        fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=quiet, development=("train", "test"))
    assert parse_counts("train=3,train_shift=2,transfer=1") == {"train": 3, "train_shift": 2, "transfer": 1}
    with pytest.raises(SystemExit, match=r"expected split=N for " + ", ".join(SPLITS) + r"; got 'shift=2'"):
        parse_counts("train=3,shift=2")


def test_texture_shift_is_measured_never_fitted_and_named_in_the_card() -> None:
    """The ``texture_shift`` split (every tissue with white matter's texture) is held out like
    ``test``: measured, in the card and the OOD false alarms, refused as development."""
    import pytest

    from GliomaMTLLib.genotype.collect import SPLIT_RENDER, SPLIT_SEEDS
    from GliomaMTLLib.synth.appearance import CLASSES
    from GliomaMTLLib.train.genotype_fit import card_section

    assert SPLIT_RENDER["texture_shift"] == {"texture_like": {c: "wm" for c in CLASSES}}
    starts = sorted(SPLIT_SEEDS.values())  # no two splits share phantoms (up to 50,000 per split)
    assert all(b - a >= 50_000 for a, b in zip(starts, starts[1:]))
    rng = np.random.default_rng(8)
    data = {"train": _split(120, rng), "val": _split(80, rng), "test": _split(100, rng), "texture_shift": _split(60, rng)}
    result = fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=lambda m: None)
    assert result["spec"]["n_development"] == 200
    assert result["metrics"]["idh"]["texture_shift"]["n"] == 60 and result["metrics"]["idh"]["texture_shift"]["auc"] > 0.85
    assert 0.0 <= result["spec"]["ood"]["texture_shift_false_alarm_rate"] <= 1.0
    section = card_section("m", "9.9.9", result, data, "cmd", (0.35, 0.65), None)
    assert "| idh | texture_shift | 60 |" in section and "60 texture shift (every tissue" in section
    assert "; texture shift " in section
    # each ECE comes with what a perfectly calibrated path would show on as many phantoms
    m = result["metrics"]["idh"]["test"]
    assert 0.0 < m["ece_chance_median"] < m["ece_chance_p95"] < 0.5
    assert f"| {m['ece']:.3f} ({m['ece_chance_median']:.3f} [{m['ece_chance_p95']:.3f}]) |" in section
    with pytest.raises(ValueError, match=r"include a held-out split"):
        fit_and_measure(data, TASKS, band=(0.35, 0.65), temperatures={}, log=lambda m: None,
                        development=("train", "texture_shift"))


def test_features_of_a_bundle_restrict_the_fit(tmp_path) -> None:
    """``--features-of``: the fit uses exactly the named features of a bundle's path, in its order;
    an unknown name or a bundle without a path is a clear error."""
    import json

    import pytest

    from GliomaMTLLib.train.genotype_fit import path_features, restrict_features

    rng = np.random.default_rng(9)
    data = {"train": _split(120, rng), "val": _split(80, rng), "test": _split(100, rng)}
    names = [FEATURE_NAMES[1], FEATURE_NAMES[0], FEATURE_NAMES[5]]
    small = restrict_features(data, names)
    np.testing.assert_array_equal(small["test"]["X"], data["test"]["X"][:, [1, 0, 5]])
    result = fit_and_measure(small, TASKS, band=(0.35, 0.65), temperatures={}, log=lambda m: None, feature_names=names)
    assert result["spec"]["features"] == names
    with pytest.raises(ValueError, match=r"unknown genotype features \['no_such'\]"):
        restrict_features(data, ["no_such"])
    from GliomaMTLLib.inference.fixtures import make_random_bundle

    folder = make_random_bundle(tmp_path / "b", tasks=()).folder
    meta = json.loads((folder / "model.json").read_text())

    def with_paths(paths: list) -> None:
        (folder / "model.json").write_text(json.dumps({**meta, "genotype_paths": paths}))

    with_paths([{"kind": "k", "features": names}])
    assert path_features(folder) == names
    with_paths([{"kind": "k", "features": [*names, "no_such"]}])
    with pytest.raises(ValueError, match=r"names unknown genotype features \['no_such'\]"):
        path_features(folder)
    with_paths([])
    with pytest.raises(ValueError, match="has no radiological-feature genotype path"):
        path_features(folder)
    # the command line refuses a bad --features-of before any collection, naming it
    from GliomaMTLLib.train.genotype_fit import main

    with pytest.raises(SystemExit, match=r"--features-of .*has no radiological-feature genotype path"):
        main(["--model", str(folder), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
              "--collect", "--features-of", str(folder)])
    assert not (tmp_path / "cache").exists()


def test_add_features_join_the_bundles_path_or_say_why_not(tmp_path) -> None:
    """``--add-features``: new features follow the bundle's own (kept in its order); a repeated or
    unknown name, or ``--add-features`` without ``--features-of``, is refused before any collection."""
    import pytest

    from GliomaMTLLib.train.genotype_fit import main, with_features

    base = [FEATURE_NAMES[3], FEATURE_NAMES[1]]
    assert with_features(base, [FEATURE_NAMES[9], FEATURE_NAMES[2]]) == [*base, FEATURE_NAMES[2], FEATURE_NAMES[9]]
    with pytest.raises(ValueError, match=rf"\['{FEATURE_NAMES[1]}'\] already in the path"):
        with_features(base, [FEATURE_NAMES[1]])
    with pytest.raises(ValueError, match=r"--add-features names unknown genotype features \['no_such'\]"):
        with_features(base, ["no_such"])
    with pytest.raises(SystemExit, match="--add-features needs --features-of"):
        main(["--model", "gliomamtl_adult", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
              "--collect", "--add-features", FEATURE_NAMES[0]])
    with pytest.raises(SystemExit, match=r"--add-features no_such: .*unknown genotype features \['no_such'\]"):
        main(["--model", "gliomamtl_adult", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
              "--collect", "--features-of", "gliomamtl_adult", "--add-features", "no_such"])
    assert not (tmp_path / "cache").exists()


def test_counts_choose_which_cached_phantoms_a_fit_uses(tmp_path) -> None:
    """A cache grown for another run (more train or test phantoms) does not change a fit whose
    ``--counts`` name fewer: only the first N of each named split are loaded."""
    import json

    from GliomaMTLLib.train.genotype_fit import load_features

    rng = np.random.default_rng(3)
    shape = (12, 12, 12)
    probs = np.zeros((4, *shape), np.float16)
    probs[0] = 1
    probs[:, 4:8, 4:8, 4:8] = np.array([0, 0.5, 0.2, 0.3], np.float16)[:, None, None, None]
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            meta = {"case_id": f"{split}-{i:04d}", "split": split, "seed": i, "idh": "mutant", "codel_1p19q": "intact",
                    "age": 40.0 + i, "found": True}
            np.savez_compressed(tmp_path / f"{split}-{i:04d}.npz", meta=json.dumps(meta), probs=probs,
                                image=rng.normal(size=(4, *shape)).astype(np.float16), depth=np.full(shape, 10, np.float16),
                                position=np.zeros((3, *shape), np.float16), spacing_zyx=np.ones(3, np.float32))
    everything = load_features(tmp_path, ("t1n", "t1c", "t2w", "t2f"), TASKS, "adult")
    assert {s: len(d["ids"]) for s, d in everything.items()} == {"train": 3, "val": 1, "test": 2}
    some = load_features(tmp_path, ("t1n", "t1c", "t2w", "t2f"), TASKS, "adult", {"train": 2, "test": 1})
    assert {s: d["ids"] for s, d in some.items()} == {"train": ["train-0000", "train-0001"], "test": ["test-0000"]}
    np.testing.assert_array_equal(some["train"]["X"], everything["train"]["X"][:2])
    assert some["train"]["age"].tolist() == [40.0, 41.0]
    import argparse

    from GliomaMTLLib.train.genotype_fit import add_counts_option

    parser = argparse.ArgumentParser()
    add_counts_option(parser)
    assert parser.parse_args([]).counts is None
    assert parser.parse_args(["--counts", "train=2,test=1"]).counts == {"train": 2, "test": 1}
