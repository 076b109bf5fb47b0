"""Correction store and `gliomamtl correct` / `store`: entries, checks, atomic writes (kill safety)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.cli import main
from GliomaMTLLib.finetune.correct import add_correction
from GliomaMTLLib.finetune.fixtures import write_phantom_case
from GliomaMTLLib.finetune.store import CorrectionStore, StoreError, file_sha256
from GliomaMTLLib.inference import make_random_bundle
from GliomaMTLLib.io import Geometry, write_labels

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIOMAMTL_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("m") / "tiny", crop_size=(16, 16, 16))


@pytest.fixture(scope="module")
def whole_tumor_bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("m") / "wt", labels={1: "tumor"}, tasks=("braf",),
                              sequences=("t2f",), crop_size=(16, 16, 16))


@pytest.fixture
def case(tmp_path):
    """A phantom case folder and a "corrected" label file (its truth) on its grid."""
    folder, truth = write_phantom_case(tmp_path / "BraTS-GLI-00001-000", "BraTS-GLI-00001-000", size=(20, 22, 18))
    labels = tmp_path / "corrected.nii.gz"
    write_labels(labels, truth.label, truth.geometry)
    return folder, labels, truth


def test_correct_stores_a_self_contained_entry(bundle, case, tmp_path):
    folder, labels, truth = case
    prediction = truth.label.copy()
    prediction[truth.label == 2] = 0  # the model missed the edema: the reader added it back
    store = CorrectionStore(tmp_path / "store")
    entry = add_correction(folder, labels, store=store, model=bundle, genotype={"idh": "IDH-mut", "braf": None},
                           prediction=prediction)
    assert entry.entry_id == "BraTS-GLI-00001-000" and store.ids() == [entry.entry_id]
    assert entry.meta["changed_voxels"] == int((truth.label == 2).sum()) > 0
    assert entry.meta["tumor_voxels"] == int((truth.label > 0).sum())
    assert entry.genotype == {"idh": "mutant"}
    assert entry.meta["model"]["name"] == bundle.name and entry.meta["model"]["sha256"] == bundle.meta["weights"]["sha256"]
    assert set(entry.meta["files"]) == {"t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz", "t2f.nii.gz", "seg.nii.gz"}
    for name, digest in entry.meta["files"].items():
        assert file_sha256(entry.folder / name) == digest
    # the sequences are byte-for-byte copies, so the entry lives on when the original files go
    assert file_sha256(entry.folder / "t2f.nii.gz") == file_sha256(folder / "BraTS-GLI-00001-000-t2f.nii.gz")
    for p in folder.iterdir():
        p.unlink()
    stored = entry.read_case()
    assert Geometry.same_grid(stored.geometry, truth.geometry)
    np.testing.assert_array_equal(stored.label, truth.label)
    np.testing.assert_array_equal(stored.images["t1c"], truth.images["t1c"])
    assert entry.verify() == [] and [h["action"] for h in store.history()] == ["add"]
    assert not list((tmp_path / "store" / ".staging").iterdir())


def test_correct_counts_changes_against_a_fresh_prediction(bundle, case, tmp_path):
    from GliomaMTLLib.inference import Predictor

    folder, labels, truth = case
    entry = add_correction(folder, labels, store=tmp_path / "s", model=bundle)
    predicted = Predictor(bundle, device="cpu", engine="torch").predict(truth).labels
    assert entry.meta["changed_voxels"] == int(np.count_nonzero(predicted != truth.label))


def test_correction_errors_name_the_file_and_value(bundle, whole_tumor_bundle, case, tmp_path):
    folder, labels, truth = case
    store = tmp_path / "store"
    other_grid = tmp_path / "other_grid.nii.gz"
    write_labels(other_grid, truth.label[:, :, :-2], Geometry((18, 22, 18), (3.0, 3.0, 3.0), (0, 0, 0),
                                                              (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    with pytest.raises(ValueError, match=r"other_grid\.nii\.gz is on another grid than the case"):
        add_correction(folder, other_grid, store=store, model=bundle, prediction=truth.label)
    bad = tmp_path / "bad_values.nii.gz"
    image = truth.geometry.to_image(np.where(truth.label == 1, 7, truth.label).astype(np.uint8))
    sitk.WriteImage(image, str(bad))
    with pytest.raises(ValueError, match=r"bad_values\.nii\.gz.*\[7\]"):
        add_correction(folder, bad, store=store, model=bundle, prediction=truth.label)
    # label 2 and 3 exist in BraTS but not in a whole-tumor model
    with pytest.raises(ValueError, match=r"corrected\.nii\.gz holds label value\(s\) \[2, 3\] the model does not predict"):
        add_correction(folder, labels, store=store, model=whole_tumor_bundle, prediction=truth.label)
    with pytest.raises(ValueError, match=r"--idh 'maybe'.*wildtype"):
        add_correction(folder, labels, store=store, model=bundle, genotype={"idh": "maybe"}, prediction=truth.label)
    assert CorrectionStore(store).ids() == []  # nothing was stored by a refused correction
    add_correction(folder, labels, store=store, model=bundle, prediction=truth.label)
    with pytest.raises(StoreError, match="already in the store.*--replace"):
        add_correction(folder, labels, store=store, model=bundle, prediction=truth.label)
    again = add_correction(folder, labels, store=store, model=bundle, prediction=np.zeros_like(truth.label),
                           genotype={"codel_1p19q": "codeleted"}, replace=True)
    assert again.genotype == {"codel_1p19q": "codeleted"} and again.meta["changed_voxels"] == int((truth.label > 0).sum())
    assert [h["action"] for h in CorrectionStore(store).history()] == ["add", "replace"]


def test_cli_correct_and_store_list_show_remove(bundle, case, tmp_path, capsys):
    folder, labels, truth = case
    store = tmp_path / "store"
    assert main(["correct", str(folder), "--labels", str(labels), "--store", str(store), "--model", str(bundle.folder),
                 "--prediction", str(labels), "--codel", "intact"]) == 0
    assert "stored BraTS-GLI-00001-000" in capsys.readouterr().out
    assert main(["correct", str(folder), "--labels", str(labels), "--store", str(store), "--model",
                 str(bundle.folder), "--braf", "nonsense"]) == 1
    assert "--braf 'nonsense'" in capsys.readouterr().err
    assert main(["store", "list", "--store", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["entry"] for e in listed["entries"]] == ["BraTS-GLI-00001-000"]
    assert listed["entries"][0]["changed_voxels"] == 0 and listed["entries"][0]["genotype"] == "codel_1p19q=intact"
    assert main(["store", "show", "BraTS-GLI-00001-000", "--store", str(store), "--verify"]) == 0
    assert "5 file(s) match their sha256" in capsys.readouterr().out
    assert main(["store", "remove", "BraTS-GLI-00001-000", "nope", "--store", str(store)]) == 1
    assert "no entry 'nope'" in capsys.readouterr().err
    assert CorrectionStore(store).ids() == ["BraTS-GLI-00001-000"]  # a bad id in the list removes nothing
    assert main(["store", "remove", "BraTS-GLI-00001-000", "--store", str(store)]) == 0
    assert "removed BraTS-GLI-00001-000 (case BraTS-GLI-00001-000" in capsys.readouterr().out
    assert CorrectionStore(store).ids() == []


def test_store_default_folder_follows_gliomamtl_data(tmp_path):
    assert CorrectionStore().root == (tmp_path / "data" / "corrections").absolute()


def test_a_killed_write_leaves_no_entry(bundle, case, tmp_path):
    """SIGKILL in the middle of writing an entry (after the sequences are copied): no entry, and
    the next opening of the store clears the half-written staging folder."""
    folder, labels, truth = case
    store = tmp_path / "store"
    script = textwrap.dedent(f"""
        import os, signal
        import GliomaMTLLib.io as gio
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        gio.write_labels = killed
        import numpy as np
        from GliomaMTLLib.finetune.correct import add_correction
        add_correction({str(folder)!r}, {str(labels)!r}, store={str(store)!r}, model={str(bundle.folder)!r},
                       prediction=np.zeros({truth.label.shape!r}, np.uint8))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    staged = list((store / ".staging").iterdir())
    assert len(staged) == 1 and (staged[0] / "t1n.nii.gz").is_file()  # killed half-way
    reopened = CorrectionStore(store)
    assert reopened.ids() == [] and not list((store / ".staging").iterdir())
    entry = add_correction(folder, labels, store=reopened, model=bundle, prediction=truth.label)  # and it works again
    assert entry.verify() == []


def test_a_replace_killed_between_renames_keeps_the_old_entry(bundle, case, tmp_path):
    folder, labels, truth = case
    store = CorrectionStore(tmp_path / "store")
    entry = add_correction(folder, labels, store=store, model=bundle, prediction=truth.label)
    # what a kill between "old entry -> trash" and "new entry -> entries" leaves behind
    trash = store.trash_dir / f"{entry.entry_id}.replacing.x1"
    trash.mkdir(parents=True)
    os.replace(entry.folder, trash / "entry")
    assert CorrectionStore(store.root).get(entry.entry_id).verify() == []
    assert not list(store.trash_dir.iterdir())
