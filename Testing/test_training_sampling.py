"""Training samples: background prefetch gives the same batches, sequence subsets, and the
data/compute time split in train_log.jsonl (GliomaMTLLib.train.sampling, trainer)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.train.config import AUGMENT_DEFAULTS, INPUT_DEFAULTS
from GliomaMTLLib.train.data import PreparedCase
from GliomaMTLLib.train.sampling import Augmenter, Prefetcher, Sampler, balanced_case_weights

SEQ = ["t1n", "t1c", "t2w", "t2f"]


def _case(i: int) -> PreparedCase:
    rng = np.random.default_rng(i)
    shape = (20, 22, 24)
    image = rng.normal(size=(4, *shape)).astype(np.float32) + 3.0
    label = np.zeros(shape, np.uint8)
    label[8:12, 9:14, 10:15] = 1 + (i % 3)
    grid = Geometry(size=shape[::-1], spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    fg = {int(v): np.flatnonzero(label.ravel() == v) for v in np.unique(label) if v > 0}
    return PreparedCase(case_id=f"c{i}", split="train", image=image, label=label, weak_label=None, reference=None,
                        genotype={}, genotype_names={}, survival_days=None, event=None, tabular=None,
                        spacing=(2.0, 2.0, 2.0), geometry=grid, input_geometry=grid, tumor_center=(10.0, 11.0, 12.0),
                        fg=fg)


def _sampler(augment: dict | None = None) -> Sampler:
    conf = {**AUGMENT_DEFAULTS, "noise_prob": 0.5, "gamma_prob": 0.5, "sequence_dropout": 0.2, **(augment or {})}
    inp = {**INPUT_DEFAULTS, "mode": "patch", "size": [12, 12, 12], "fg_fraction": 0.5}
    return Sampler([_case(i) for i in range(3)], inp, Augmenter(conf, 4, SEQ), [], seed=3, stage_index=0,
                   phase_index=1)


def test_prefetched_batches_equal_batches_drawn_in_the_loop():
    direct = [_sampler().batch(it, [0, 1]) for it in range(2, 7)]
    with Prefetcher(_sampler(), [0, 1], start=2, stop=7, depth=2) as pre:
        fetched = [pre.get(it) for it in range(2, 7)]
    for a, b in zip(direct, fetched):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["case_id"] == b["case_id"]
    with Prefetcher(_sampler(), [0, 1], start=0, stop=7, depth=3) as pre:  # asked out of order: restarts
        assert torch.equal(pre.get(4)["image"], direct[2]["image"])
        assert torch.equal(pre.get(5)["image"], direct[3]["image"])



def test_worker_processes_give_the_same_batches_in_iteration_order():
    direct = [_sampler().batch(it, [0, 1]) for it in range(3, 9)]
    with Prefetcher(_sampler(), [0, 1], start=3, stop=9, depth=2, workers=2) as pre:
        fetched = [pre.get(it) for it in range(3, 6)]
        restarted = pre.get(7)  # skipping ahead restarts the workers at that iteration
    for a, b in zip(direct[:3], fetched):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["case_id"] == b["case_id"]
    assert torch.equal(restarted["image"], direct[4]["image"])
    assert not torch.equal(direct[0]["image"], direct[1]["image"])  # the comparison can fail

def test_sequence_subsets_keep_exactly_one_listed_subset():
    subsets = [["t1c", "t2f"], ["t2w", "t2f"], ["t2f"]]
    sampler = _sampler({"sequence_subsets": subsets, "sequence_subset_prob": 1.0, "sequence_dropout": 0.0})
    allowed = {tuple(SEQ.index(s) for s in sub) for sub in subsets}
    seen = set()
    for it in range(30):
        image = sampler.sample(it, 0)["image"]
        kept = tuple(c for c in range(4) if image[c].abs().sum() > 0)
        assert kept in allowed, kept
        seen.add(kept)
    assert seen == allowed


def test_unknown_sequence_in_a_subset_is_a_clear_error():
    conf = {**AUGMENT_DEFAULTS, "sequence_subsets": [["t1c", "dwi"]], "sequence_subset_prob": 0.5}
    with pytest.raises(ValueError, match="dwi"):
        Augmenter(conf, 4, SEQ)


def test_train_log_splits_data_and_compute_time(tmp_path):
    from GliomaMTLLib.train.config import load_recipe
    from GliomaMTLLib.train.trainer import train

    recipe = load_recipe("shi2023", [f"data.cache_dir={tmp_path / 'cache'}", "train.iterations=3"], smoke=True)
    train(recipe, tmp_path / "run", quiet=True)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "sec_per_it" in e]
    assert steps
    for e in steps:
        assert e["data_sec_per_it"] >= 0 and e["compute_sec_per_it"] > 0
        assert e["data_sec_per_it"] + e["compute_sec_per_it"] <= e["sec_per_it"] * 1.05 + 0.01


def _genotyped(labels: list[int]) -> list[PreparedCase]:
    cases = []
    for i, y in enumerate(labels):
        c = _case(i)
        c.genotype = {"idh": y}
        cases.append(c)
    return cases


def test_balanced_weights_draw_each_known_class_equally_often():
    labels = [0] * 8 + [1] * 2 + [-1] * 2  # 8 wildtype, 2 mutant, 2 unknown
    cases = _genotyped(labels)
    w = balanced_case_weights(cases, "idh")
    assert w[:8].sum() == pytest.approx(w[8:10].sum())  # the two classes weigh the same
    assert w[10] == pytest.approx(w[:10].mean())  # unknown: the labelled cases' mean weight
    inp = {**INPUT_DEFAULTS, "mode": "patch", "size": [12, 12, 12], "fg_fraction": 0.5}
    sampler = Sampler(cases, inp, None, ["idh"], seed=1, stage_index=0, phase_index=0, case_weights=w)
    drawn = [int(sampler.sample(it, 0)["genotype"]["idh"]) for it in range(600)]
    share_mutant = drawn.count(1) / (drawn.count(0) + drawn.count(1))
    assert 0.42 < share_mutant < 0.58  # uniform drawing would give 0.2
    with pytest.raises(ValueError, match="no training case has a codel_1p19q label"):
        balanced_case_weights(cases, "codel_1p19q")
    with pytest.raises(ValueError, match="case_weights must be 12"):
        Sampler(cases, inp, None, ["idh"], seed=1, stage_index=0, phase_index=0, case_weights=np.ones(3))


def test_prepare_workers_start_single_threaded_and_the_environment_is_restored(monkeypatch):
    from GliomaMTLLib.train import data

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", raising=False)
    with data._single_threaded_children():
        assert all(os.environ[k] == "1" for k in data._THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS" not in os.environ
