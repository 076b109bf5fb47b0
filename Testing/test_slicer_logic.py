"""GliomaMTL.py's logic run outside Slicer, with small stand-ins for the Slicer, Qt and VTK modules.

The stand-ins only record calls or do the one thing a test needs (``launchConsoleProcess`` starts
a real child process, the storage node copies a file). This runs the module's own code paths:
import, module metadata, sample registration, input checks, job files, child jobs (refusal of a
second job, cancel), and the first-use dependency install's decisions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "GliomaMTL" / "Resources" / "SampleData"


class FakeVolume:
    """A scalar volume node that "holds" the data of a file."""

    def __init__(self, name: str, path: Path, transform: str | None = None) -> None:
        self.name, self.path, self.transform = name, path, transform

    def GetName(self):  # noqa: N802 - Slicer's naming
        return self.name

    def GetTransformNodeID(self):  # noqa: N802
        return self.transform


class FakeStorageNode:
    def SetFileName(self, name):  # noqa: N802
        self.name = name

    def UseCompressionOff(self):  # noqa: N802
        pass

    def WriteData(self, node):  # noqa: N802
        shutil.copy(node.path, self.name)
        return 1


class _Base:
    def __init__(self, *args, **kwargs):
        self.parent = types.SimpleNamespace() if not args else args[0]

    def getParameterNode(self):  # noqa: N802
        return mock.MagicMock()


def _launch(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None):  # noqa: N803
    return subprocess.Popen(args, cwd=cwd, env={**os.environ, **(updateEnvironment or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def fake_slicer(tmp_path, monkeypatch):
    """Install stand-ins for slicer, qt, vtk and SampleData; returns the slicer stand-in."""
    counter = itertools.count()
    slicer = types.ModuleType("slicer")
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {"__init__": lambda self: None})
    util.launchConsoleProcess = mock.MagicMock(side_effect=_launch)
    util.tempDirectory = lambda key="__SlicerTemp__", *a, **k: str(Path(tmp_path / f"{key}{next(counter)}").mkdir() or
                                                                   tmp_path / f"{key}{next(counter) - 1}")
    util.pip_install = mock.MagicMock()
    util.confirmOkCancelDisplay = mock.MagicMock(return_value=True)
    slicer.util = util
    slicer.app = mock.MagicMock()
    slicer.app.testingEnabled.return_value = False
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
    slicer.vtkMRMLSegmentationNode = type("vtkMRMLSegmentationNode", (), {})
    slicer.vtkMRMLVolumeArchetypeStorageNode = FakeStorageNode
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda choices: ("choice", tuple(choices))
    pnw.WithinRange = lambda lo, hi: ("range", lo, hi)
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(slm, name, type(name, (_Base,), {}))
    slm.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (), {})
    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = mock.MagicMock()
    for name, module in {"slicer": slicer, "slicer.util": util, "slicer.i18n": i18n,
                         "slicer.parameterNodeWrapper": pnw, "slicer.ScriptedLoadableModule": slm,
                         "qt": mock.MagicMock(), "vtk": mock.MagicMock(), "SampleData": sample_data}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("GLIOMAMTL_DATA", str(tmp_path / "data"))
    return slicer


@pytest.fixture
def module(fake_slicer):
    spec = importlib.util.spec_from_file_location("GliomaMTL", ROOT / "GliomaMTL" / "GliomaMTL.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sample_inputs(module, sequences=("t1n", "t1c", "t2w", "t2f")):
    return {s: FakeVolume(f"{module.SAMPLE_NAME}-{s}", SAMPLES / module.SAMPLE_FILES[s][0]) for s in sequences}


def test_module_metadata_and_sample_registration(module, fake_slicer):
    parent = types.SimpleNamespace()
    module.GliomaMTL(parent)
    assert parent.title == "GliomaMTL" and parent.categories == ["Segmentation"]
    assert "Not for clinical use" in parent.helpText and "not learned" in parent.helpText
    module.registerSampleData()
    kwargs = sys.modules["SampleData"].SampleDataLogic.registerCustomSampleDataSource.call_args.kwargs
    assert kwargs["nodeNames"] == [f"GliomaMTLSample-{s}" for s in ("t1n", "t1c", "t2w", "t2f")]
    for uri, checksum in zip(kwargs["uris"], kwargs["checksums"]):
        path = Path(uri.removeprefix("file://"))
        assert checksum == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert Path(kwargs["thumbnailFileName"]).is_file()
    assert module.engineRoot() == ROOT


def test_inputs_are_checked_and_written_for_the_engine(module):
    logic = module.GliomaMTLLogic()
    adult = next(c.id for c in logic.modelChoices() if c.name == "gliomamtl_adult" and c.shipped)
    with pytest.raises(ValueError, match="needs the sequences t2f"):  # FLAIR is the adult model's one required input
        logic.checkInputs(_sample_inputs(module, ("t1n", "t1c")), adult)
    partial, _, _ = logic.checkInputs(_sample_inputs(module, ("t1c", "t2f")), adult)  # optional ones may be absent
    assert sorted(partial) == ["t1c", "t2f"]
    moved = _sample_inputs(module)
    moved["t2f"].transform = "vtkMRMLLinearTransformNode1"
    with pytest.raises(ValueError, match="different transforms"):
        logic.checkInputs(moved, adult)
    with pytest.raises(ValueError, match="not installed"):
        logic.checkInputs(_sample_inputs(module), "nosuchmodel@1")
    used, reference, case_id = logic.checkInputs(_sample_inputs(module), adult)
    assert case_id == "GliomaMTLSample"
    files = logic.writeInputs(used, case_id)
    from GliomaMTLLib.io.layout import find_sequence_files

    found, prefixes = find_sequence_files(files.input_dir)
    assert list(found) == ["t1n", "t1c", "t2w", "t2f"] and set(prefixes) == {"GliomaMTLSample"}
    assert reference.GetName() == "GliomaMTLSample-t1n"  # the engine's reference: first of t1n, t1c, t2w, t2f
    assert logic.referenceVolume(_sample_inputs(module), files).GetName() == "GliomaMTLSample-t1n"
    assert logic.displayVolume(_sample_inputs(module)).GetName() == "GliomaMTLSample-t1c"
    ped = next(c.id for c in logic.modelChoices() if c.name == "gliomamtl_pediatric")
    everything = _sample_inputs(module)
    used, reference, _ = logic.checkInputs(everything, ped)
    assert list(used) == ["t2f"] and reference.GetName() == "GliomaMTLSample-t2f"
    ped_files = logic.writeInputs(used, "ped")
    assert logic.referenceVolume(everything, ped_files).GetName() == "GliomaMTLSample-t2f"


def test_jobs_run_wait_refuse_a_second_one_and_cancel(module, fake_slicer):
    logic = module.GliomaMTLLogic()
    python = sys.executable
    job = logic.startJob("version", module.commands.engine_command(python, "--version"), expectsDone=False,
                         waitForCompletion=True)
    assert job.outcome() == "done", job.details()
    assert any(line.startswith("gliomamtl ") for line in job.state.log)
    call = fake_slicer.util.launchConsoleProcess.call_args
    assert call.kwargs["cwd"] == str(ROOT) and call.kwargs["updateEnvironment"]["PYTHONUNBUFFERED"] == "1"
    assert call.kwargs["useStartupEnvironment"] is False  # no PythonSlicer launcher here: this Python
    done = []
    slow = [python, "-c", "import time; time.sleep(60)"]
    job = logic.startJob("slow", slow, completedCallback=done.append)
    assert logic.isBusy()
    with pytest.raises(RuntimeError, match="already running"):
        logic.startJob("second", slow)
    logic.cancel()
    job.wait(timeout=30)
    logic._poll()  # what the timer does next
    assert job.outcome() == "cancelled" and done == [job] and not logic.isBusy()


def test_first_use_install_pins_slicer_packages(module, fake_slicer, monkeypatch):
    logic = module.GliomaMTLLogic()
    versions = {"numpy": "2.2.0", "SimpleITK": "2.5.0", "monai": "1.5.0"}
    monkeypatch.setattr(module.dependencies, "installed_version", lambda name: versions.get(name))
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    assert not logic.dependenciesReady()
    fake_slicer.util.confirmOkCancelDisplay.return_value = False
    assert logic.installDependencies() is False and not fake_slicer.util.pip_install.called
    fake_slicer.util.confirmOkCancelDisplay.return_value = True
    logic.installDependencies()
    torch_args, rest = (c.args[0] for c in fake_slicer.util.pip_install.call_args_list)
    assert torch_args == ["torch>=2.2", "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert rest[0] == "-c" and Path(rest[1]).read_text() == "numpy==2.2.0\nSimpleITK==2.5.0\n"
    assert "captum>=0.7" in rest and "monai>=1.4" not in rest and not any(a.startswith("numpy") for a in rest)
    pytorch_utils = types.ModuleType("PyTorchUtils")
    pytorch_utils.PyTorchUtilsLogic = mock.MagicMock()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", pytorch_utils)
    fake_slicer.util.pip_install.reset_mock()
    logic.installDependencies()
    pytorch_utils.PyTorchUtilsLogic.return_value.installTorch.assert_called_once_with(
        askConfirmation=False, torchVersionRequirement=">=2.2")
    assert all(c.args[0][0] == "-c" for c in fake_slicer.util.pip_install.call_args_list)
