"""Model registry and `gliomamtl models`: versions never overwritten, active version, use, rollback,
and `resolve_bundle` / `Predictor` / `predict` accepting any version."""

from __future__ import annotations

import json

import pytest
import torch

from GliomaMTLLib.bundle import BundleError, load_bundle, resolve_bundle, sha256_of
from GliomaMTLLib.cli import main
from GliomaMTLLib.finetune.registry import ModelRegistry, RegistryError
from GliomaMTLLib.inference import make_random_bundle


@pytest.fixture
def shipped(monkeypatch, tmp_path):
    """A "shipped" tiny bundle on $GLIOMAMTL_MODELS and an empty registry under $GLIOMAMTL_DATA."""
    models = tmp_path / "shipped"
    bundle = make_random_bundle(models / "tinymodel", name="tinymodel", crop_size=(16, 16, 16))
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta["version"] = "1.0.0"
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    monkeypatch.setenv("GLIOMAMTL_MODELS", str(models))
    monkeypatch.setenv("GLIOMAMTL_DATA", str(tmp_path / "data"))
    return load_bundle("tinymodel")


def add_version(registry: ModelRegistry, parent, scale: float, activate: bool = True):
    """A new version of ``parent``'s model whose main weights are the parent's times ``scale``."""
    state = parent.state_dicts()
    state["main"] = {k: v * scale if v.is_floating_point() else v for k, v in state["main"].items()}
    meta = {k: v for k, v in parent.meta.items() if k not in ("format", "weights")}
    meta["version"] = registry.next_version(parent.name, parent.version)
    meta["finetune"] = {"parent": {"id": f"{parent.name}@{parent.version}"},
                        "metrics_before": {"n": 1, "dice": {"WT": 0.4}}, "metrics_after": {"n": 1, "dice": {"WT": 0.7}},
                        "held_out": ["c1"]}
    card = "# card\n\n## Status of this version (read first)\n\nFine-tuned for a test. More text.\n"
    return registry.add(meta, state, card, activate=activate)


def test_versions_are_numbered_and_never_overwritten(shipped):
    registry = ModelRegistry()
    v1 = add_version(registry, shipped, 0.5)
    assert v1.id == "tinymodel@1.0.0-ft.1" and v1.folder == registry.root / "tinymodel" / "1.0.0-ft.1"
    before = sha256_of(v1.folder / "model.safetensors")
    v2 = add_version(registry, load_bundle(v1.folder), 0.5)
    assert v2.version == "1.0.0-ft.2" and v2.parent == "tinymodel@1.0.0-ft.1"
    meta = {k: v for k, v in load_bundle(v1.folder).meta.items() if k not in ("format", "weights")}
    with pytest.raises(RegistryError, match="1.0.0-ft.1.*refusing to overwrite"):
        registry.add(meta, load_bundle(v1.folder).state_dicts(), "card")
    assert sha256_of(v1.folder / "model.safetensors") == before
    load_bundle(v1.folder)  # still verifies
    # a number is never reused, not even when a version folder was half-written by a killed job
    (registry.root / "tinymodel" / ".1.0.0-ft.7.abcd").mkdir()
    assert registry.next_version("tinymodel", "1.0.0-ft.2") == "1.0.0-ft.8"


def test_active_version_use_and_rollback(shipped):
    registry = ModelRegistry()
    assert registry.active("tinymodel").id == "tinymodel@1.0.0" and registry.active("tinymodel").shipped
    v1 = add_version(registry, shipped, 0.5)
    v2 = add_version(registry, load_bundle(v1.folder), 2.0)
    assert registry.active("tinymodel").id == v2.id
    # the name gives the active version everywhere a model is named
    assert resolve_bundle("tinymodel") == v2.folder
    assert resolve_bundle("tinymodel@1.0.0") == shipped.folder
    assert resolve_bundle("1.0.0-ft.1") == v1.folder and resolve_bundle("tinymodel@1.0.0-ft.1") == v1.folder
    assert registry.use("tinymodel@1.0.0-ft.1").id == v1.id and resolve_bundle("tinymodel") == v1.folder
    name, left, now = registry.rollback()
    assert (name, left, now.id) == ("tinymodel", "1.0.0-ft.1", v2.id)
    assert registry.rollback("tinymodel")[2].id == v1.id
    name, left, now = registry.rollback("tinymodel")
    assert left == "1.0.0-ft.1" and now.id == "tinymodel@1.0.0" and now.shipped
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("tinymodel")
    with pytest.raises(BundleError, match=r"no model version 'tinymodel@9.9.9'; known versions: \['tinymodel@1.0.0'"):
        resolve_bundle("tinymodel@9.9.9")
    with pytest.raises(RegistryError, match="no model version 'nope@1'"):
        registry.use("nope@1")


def test_predictor_runs_the_active_version(shipped):
    from GliomaMTLLib.inference import Predictor

    registry = ModelRegistry()
    v1 = add_version(registry, shipped, 0.0)
    predictor = Predictor("tinymodel", device="cpu", engine="torch")
    assert predictor.model_info["version"] == "1.0.0-ft.1"
    assert all(float(p.detach().abs().sum()) == 0 for p in predictor.networks["main"].parameters() if p.dim() > 1)
    assert Predictor("tinymodel@1.0.0", device="cpu", engine="torch").model_info["version"] == "1.0.0"
    assert v1.metrics_summary() == {"held_out": 1, "wt_before": 0.4, "wt_after": 0.7}


def test_cli_models_list_show_use_rollback(shipped, capsys):
    registry = ModelRegistry()
    add_version(registry, shipped, 0.5, activate=False)
    assert main(["models", "list", "--json"]) == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)["versions"]}
    assert rows["tinymodel@1.0.0"][""] == "*" and rows["tinymodel@1.0.0-ft.1"][""] == ""
    ft = rows["tinymodel@1.0.0-ft.1"]
    assert ft["parent"] == "tinymodel@1.0.0" and ft["held-out WT Dice"] == "0.40 -> 0.70 (1)"
    assert ft["status"] == "Fine-tuned for a test." and ft["sequences"] == "t1n,t1c,t2w,t2f"
    assert main(["models", "use", "1.0.0-ft.1"]) == 0
    assert "tinymodel@1.0.0-ft.1 is now the active version" in capsys.readouterr().out
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "| * | tinymodel@1.0.0-ft.1 |" in table and "|  | tinymodel@1.0.0 |" in table
    assert main(["models", "show", "tinymodel"]) == 0
    shown = capsys.readouterr().out
    assert '"version": "tinymodel@1.0.0-ft.1"' in shown and '"active": true' in shown
    assert main(["models", "rollback"]) == 0
    assert "rolled back tinymodel from 1.0.0-ft.1 to 1.0.0 (shipped)" in capsys.readouterr().out
    assert main(["models", "rollback"]) == 1
    assert "no model has been switched or fine-tuned" in capsys.readouterr().err
    assert main(["models", "show", "tinymodel@5"]) == 1
    assert "no model version 'tinymodel@5'" in capsys.readouterr().err


def test_a_corrupt_active_pointer_is_a_clear_error(shipped):
    registry = ModelRegistry()
    registry.root.mkdir(parents=True)
    (registry.root / "active.json").write_text(json.dumps({"history": {"tinymodel": ["1.0.0-ft.4"]}}))
    with pytest.raises(BundleError, match="active version of 'tinymodel' is '1.0.0-ft.4'.*rollback"):
        load_bundle("tinymodel")
    assert torch.is_tensor(next(iter(load_bundle("tinymodel@1.0.0").state_dicts()["main"].values())))
