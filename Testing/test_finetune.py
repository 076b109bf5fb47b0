"""Fine-tuning on the correction store: which weights change, what a version records, replay,
cancellation, and kill safety (SIGKILL mid-run leaves the store and earlier versions intact)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from GliomaMTLLib.bundle import load_bundle, sha256_of
from GliomaMTLLib.finetune.data import held_out_split
from GliomaMTLLib.finetune.fixtures import make_recipe_bundle, write_phantom_case
from GliomaMTLLib.finetune.job import FinetuneCancelled, FinetuneSettings, StopFlag, run_finetune
from GliomaMTLLib.finetune.registry import ModelRegistry
from GliomaMTLLib.finetune.store import CorrectionStore
from GliomaMTLLib.progress import parse_event

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path, single_torch_thread):
    monkeypatch.setenv("GLIOMAMTL_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny cascade with the smoke architecture of the adult recipe (random weights)."""
    return make_recipe_bundle(tmp_path_factory.mktemp("models") / "tiny")


def make_store(root: Path, n: int = 3, genotype: dict | None = None) -> CorrectionStore:
    store = CorrectionStore(root / "store")
    for i in range(n):
        folder, case = write_phantom_case(root / f"case{i}", f"P{i}", seed=i)
        files = {k: folder / f"P{i}-{k}.nii.gz" for k in case.images}
        store.add(f"P{i}", files, case.label, case.geometry, genotype=genotype or {})
    return store


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def changed(a: dict, b: dict, prefix: str) -> set[str]:
    return {k for k in a if k.startswith(prefix) and not torch.equal(a[k], b[k])}


def test_held_out_split_is_stable_and_never_empty():
    class E:
        def __init__(self, i):
            self.entry_id = f"case{i}"

    entries = [E(i) for i in range(10)]
    train, held = held_out_split(entries, 0.2)
    assert len(held) == 2 and len(train) == 8 and not {e.entry_id for e in held} & {e.entry_id for e in train}
    assert {e.entry_id for e in held_out_split(entries[::-1], 0.2)[1]} == {e.entry_id for e in held}
    assert len(held_out_split(entries[:2], 0.2)[1]) == 1 and len(held_out_split(entries[:1], 0.5)[1]) == 0
    assert held_out_split(entries, 0.0)[1] == []


def test_main_only_finetune_keeps_the_localizer_bit_identical(parent, tmp_path):
    store = make_store(tmp_path)
    result = run_finetune(store, parent.folder, settings=FinetuneSettings(iterations=2, stages=("main",), replay_cases=0))
    registry = ModelRegistry()
    new = load_bundle(result["version"])  # verifies the sha256 of the new weights
    assert result["version"] == "tiny_cascade@0.0.1-ft.1" and new.folder == registry.root / "tiny_cascade" / "0.0.1-ft.1"
    before, after = tensors(parent.folder), tensors(new.folder)
    assert set(before) == set(after)
    assert not changed(before, after, "localizer.")  # carried over byte for byte
    main_changed = changed(before, after, "main.")
    assert any(k.startswith("main.decoder") or k.startswith("main.encoder") for k in main_changed)
    # no genotype label in the store: the genotype path (heads and gate encoder) is untouched
    assert not {k for k in main_changed if "classifier" in k or "gate" in k}
    ft = new.meta["finetune"]
    assert ft["parent"]["id"] == "tiny_cascade@0.0.1" and ft["carried_over"] == ["localizer"]
    assert sorted(ft["trained_on"] + ft["held_out"]) == ["P0", "P1", "P2"] and len(ft["held_out"]) == 1
    assert set(ft["entries"]) == {"P0", "P1", "P2"} and ft["genotype_trained"] is False
    for key in ("metrics_before", "metrics_after"):
        assert ft[key]["n"] == 1 and set(ft[key]["dice"]) == {"WT", "TC", "ET"}
        assert 0.0 <= ft[key]["dice"]["WT"] <= 1.0 and ft[key]["changed_voxels"] >= 0
    assert ft["recipe"]["name"] == "gliomamtl_adult" and ft["recipe"]["smoke"] is True
    assert registry.active("tiny_cascade").id == result["version"]
    assert "Fine-tuned from tiny_cascade@0.0.1 on 2 corrected case(s)" in (new.folder / "card.md").read_text()
    assert [e.verify() for e in store.entries()] == [[], [], []]


def test_genotype_labels_in_the_store_train_the_genotype_path(parent, tmp_path):
    store = make_store(tmp_path, genotype={"idh": "mutant"})
    result = run_finetune(store, parent.folder, settings=FinetuneSettings(iterations=2, stages=("main",), replay_cases=0,
                                                                           holdout=0.0, activate=False))
    new = load_bundle(result["version"])
    assert result["stages"][0]["genotype_trained"] and new.meta["finetune"]["genotype_trained"]
    assert any("classifier" in k for k in changed(tensors(parent.folder), tensors(new.folder), "main."))
    assert ModelRegistry().active_version("tiny_cascade") is None  # --no-activate


def test_both_stages_with_synthetic_replay(parent, tmp_path):
    store = make_store(tmp_path, n=2)
    settings = FinetuneSettings(iterations=1, replay_cases=1, replay_fraction=0.5, batch_size=2,
                                replay_cache=str(tmp_path / "prepared"))
    result = run_finetune(store, parent.folder, settings=settings)
    assert [s["stage"] for s in result["stages"]] == ["localizer", "main"]
    assert all(s["replay_cases"] == 1 for s in result["stages"])
    assert list((tmp_path / "prepared").glob("synth-*/synth-adult-*_image.npy"))  # the recipe's own phantoms
    new = load_bundle(result["version"])
    assert changed(tensors(parent.folder), tensors(new.folder), "localizer.")
    assert new.meta["finetune"]["replay"] == {"cases": 1, "fraction": 0.5}


def test_cancel_writes_nothing(parent, tmp_path):
    store = make_store(tmp_path, n=2)
    stop = StopFlag()
    stop.signal = signal.SIGTERM
    with pytest.raises(FinetuneCancelled, match="SIGTERM"):
        run_finetune(store, parent.folder, settings=FinetuneSettings(iterations=1, replay_cases=0), stop=stop)
    assert ModelRegistry().registered() == []


def test_empty_store_and_unknown_stage_are_clear_errors(parent, tmp_path):
    with pytest.raises(ValueError, match="store .* is empty"):
        run_finetune(tmp_path / "empty", parent.folder)
    store = make_store(tmp_path, n=1)
    with pytest.raises(ValueError, match=r"stage\(s\) \['decoder'\] not in tiny_cascade@0.0.1"):
        run_finetune(store, parent.folder, settings=FinetuneSettings(stages=("decoder",)))


def _launch(store: Path, parent_folder: Path, env: dict, iterations: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "GliomaMTLLib", "finetune", "--store", str(store), "--from", str(parent_folder),
         "--iterations", str(iterations), "--stages", "main", "--replay", "0", "--threads", "1", "--progress-json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_training(proc: subprocess.Popen) -> list[dict]:
    events = []
    for line in proc.stdout:  # type: ignore[union-attr]
        event = parse_event(line)
        if event is not None:
            events.append(event)
            if event["event"] == "progress" and event["message"].startswith("main 1/"):
                break
    return events


def test_sigkill_mid_run_leaves_store_and_versions_intact_and_sigterm_cancels(parent, tmp_path):
    store = make_store(tmp_path)
    registry = ModelRegistry()
    first = run_finetune(store, parent.folder, settings=FinetuneSettings(iterations=1, stages=("main",), replay_cases=0))
    snapshot = {p: sha256_of(p) for p in [*registry.root.rglob("*"), *store.root.rglob("*")] if p.is_file()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # two jobs at once (half the wall time of one after the other): one is killed, one cancelled
    killed = _launch(store.root, parent.folder, env, iterations=10_000)
    cancelled = _launch(store.root, parent.folder, env, iterations=10_000)
    events = _wait_for_training(killed)
    assert events and events[-1]["message"].startswith("main 1/")
    killed.kill()
    killed.wait(timeout=60)
    _wait_for_training(cancelled)
    cancelled.send_signal(signal.SIGTERM)
    out, _ = cancelled.communicate(timeout=120)
    assert cancelled.returncode == 128 + signal.SIGTERM
    last = [e for e in map(parse_event, out.splitlines()) if e][-1]
    assert last["event"] == "error" and last["cancelled"] is True and "SIGTERM" in last["message"]
    assert {p: sha256_of(p) for p in snapshot} == snapshot  # nothing written to the store or old versions
    assert [v.id for v in ModelRegistry().registered()] == [first["version"]]
    assert all(e.verify() == [] for e in CorrectionStore(store.root).entries())

    rerun = run_finetune(store, parent.folder, settings=FinetuneSettings(iterations=1, stages=("main",), replay_cases=0))
    assert rerun["version"] == "tiny_cascade@0.0.1-ft.2"
    assert load_bundle(rerun["version"]).meta["finetune"]["parent"]["id"] == "tiny_cascade@0.0.1"
    assert {p: sha256_of(p) for p in snapshot if "store" in p.parts} == {p: h for p, h in snapshot.items() if "store" in p.parts}
    assert json.loads((registry.root / "active.json").read_text())["history"]["tiny_cascade"][-1] == "0.0.1-ft.2"


def test_cli_finetune_then_predict_with_the_new_version(parent, tmp_path, capsys):
    from GliomaMTLLib.cli import main

    store = make_store(tmp_path, n=2)
    assert main(["finetune", "--store", str(store.root), "--from", str(parent.folder), "--iterations", "1",
                 "--stages", "main", "--replay", "0", "--holdout", "0"]) == 0
    out = capsys.readouterr().out
    assert "tiny_cascade@0.0.1-ft.1 written to" in out and "(now active)" in out and "main: 1 iterations" in out
    case = tmp_path / "case0"
    assert main(["predict", str(case), "--out", str(tmp_path / "pred"), "--model", "tiny_cascade", "--engine", "torch"]) == 0
    report = json.loads((tmp_path / "pred" / "report.json").read_text())
    assert report["model"]["version"] == "0.0.1-ft.1"
    assert main(["finetune", "--store", str(store.root), "--from", str(parent.folder), "--iterations", "0"]) == 1
    assert "--iterations must be at least 1" in capsys.readouterr().err


def test_a_headless_network_fine_tunes_and_keeps_its_genotype_path(tmp_path):
    """Adult 0.3.1's shape: a segmentation-only network whose genotype comes from a feature path.
    Genotype labels in the store train nothing (no heads); the new version keeps the path and its tasks."""
    import json

    import numpy as np

    from GliomaMTLLib.genotype.features import FEATURE_NAMES
    from GliomaMTLLib.genotype.model import KIND, TaskRegression
    from GliomaMTLLib.inference import Predictor

    parent = make_recipe_bundle(tmp_path / "models" / "headless", "gliomamtl_adult_segonly", name="headless")
    meta = json.loads((parent.folder / "model.json").read_text())
    f = len(FEATURE_NAMES)
    meta["tasks"] = {"idh": ["wildtype", "mutant"]}
    meta["genotype_paths"] = [{"kind": KIND, "features": list(FEATURE_NAMES), "mean": [0.0] * f, "scale": [1.0] * f,
                               "tasks": {"idh": TaskRegression(["wildtype", "mutant"], np.zeros((1, f)),
                                                               np.array([0.3])).to_dict()}}]
    (parent.folder / "model.json").write_text(json.dumps(meta))
    store = make_store(tmp_path, n=2, genotype={"idh": "mutant"})
    result = run_finetune(store, parent.folder, settings=FinetuneSettings(iterations=1, stages=("main",), replay_cases=0,
                                                                           holdout=0.0))
    new = load_bundle(result["version"])
    assert result["version"] == "headless@0.0.1-ft.1" and not new.meta["finetune"]["genotype_trained"]
    assert new.meta["genotype_paths"] == meta["genotype_paths"] and new.meta["tasks"] == meta["tasks"]
    _, case = write_phantom_case(tmp_path / "new_case", "N", seed=5)
    prediction = Predictor(new, device="cpu", engine="torch").predict(case)
    assert prediction.genotype["idh"]["mutant"] == pytest.approx(1 / (1 + np.exp(-0.3)), abs=1e-5)
