"""The Slicer module files: consistent with each other, with CMake, and with Slicer's API.

Slicer itself cannot run here, so this checks what can be checked from the files: every widget
the code uses exists in the .ui, every parameter-node binding names a parameter, every file CMake
lists exists and every module file is listed, the shipped sample matches its checksums, and the
Slicer/Qt/CTK/VTK names pass the offline API checker for Slicer 5.10.0 and 5.12.3.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "GliomaMTL"
MODULE_PY = MODULE / "GliomaMTL.py"
UI_FILE = MODULE / "Resources" / "UI" / "GliomaMTL.ui"
CHECKER_DIR = ROOT.parent / "shared" / "tools" / "slicer-api"
CHECKER = CHECKER_DIR / "check_slicer_api.py"


def _tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _ui_names() -> set[str]:
    root = ET.parse(UI_FILE).getroot()
    return {el.get("name") for el in root.iter() if el.tag in ("widget", "layout", "action") and el.get("name")}


def _ui_parameter_bindings() -> dict[str, str]:
    root = ET.parse(UI_FILE).getroot()
    out = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[widget.get("name")] = prop.findtext("string")
    return out


def test_every_ui_name_used_in_code_exists_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", MODULE_PY.read_text(encoding="utf-8")))
    assert len(used) > 30
    missing = sorted(used - _ui_names())
    assert not missing, f"self.ui names with no widget in {UI_FILE.name}: {missing}"


def test_parameter_bindings_name_parameters_of_the_wrapper():
    cls = next(n for n in _tree().body if isinstance(n, ast.ClassDef) and n.name == "GliomaMTLParameterNode")
    parameters = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    bindings = _ui_parameter_bindings()
    assert {"t1n", "t1c", "t2w", "t2f", "outputSegmentation", "device"} <= set(bindings.values())
    unknown = {w: p for w, p in bindings.items() if p not in parameters}
    assert not unknown, f"SlicerParameterName values that are not parameters: {unknown}"
    assert len(set(bindings.values())) == len(bindings), "two widgets bound to the same parameter"


def test_node_selectors_get_the_scene():
    root = ET.parse(UI_FILE).getroot()
    combos = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert combos and combos <= receivers
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"no set({variable} ...)"
    return [t.replace("${MODULE_NAME}", "GliomaMTL") for t in match.group(1).split()]


def test_module_cmake_lists_every_module_file_and_only_existing_ones():
    text = (MODULE / "CMakeLists.txt").read_text()
    listed = set(_cmake_list(text, "MODULE_PYTHON_SCRIPTS")) | set(_cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    missing = sorted(f for f in listed if not (MODULE / f).is_file())
    assert not missing, f"listed in GliomaMTL/CMakeLists.txt but absent: {missing}"
    present = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt" and p.suffix != ".pyc"}
    unlisted = sorted(present - listed)
    assert not unlisted, f"module files not listed in GliomaMTL/CMakeLists.txt (would not be packaged): {unlisted}"
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def _cmake_glob(kind: str, pattern: str) -> set[str]:
    """Files (relative to the repository) that CMake's file(GLOB) / file(GLOB_RECURSE) returns."""
    if kind == "GLOB_RECURSE":  # "dir/*.py": matching files in dir and all its sub-folders
        folder, _, name = pattern.rpartition("/")
        return {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob(name) if p.is_file()}
    return {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if p.is_file()}


def test_module_cmake_packages_engine_models_and_recipes():
    text = (MODULE / "CMakeLists.txt").read_text()
    blocks = re.findall(r"file\((GLOB(?:_RECURSE)?) (\w+) (.*?)\)", text, re.S)
    assert {b[1] for b in blocks} == {"GLIOMAMTL_ENGINE_FILES", "GLIOMAMTL_MODEL_FILES", "GLIOMAMTL_RECIPE_FILES"}
    matched: set[str] = set()
    for kind, variable, body in blocks:
        for pattern in re.findall(r'"\$\{GLIOMAMTL_REPOSITORY_DIR\}/([^"]+)"', body):
            hits = {h for h in _cmake_glob(kind, pattern) if "__pycache__" not in h}
            assert hits, f"{variable}: CMake pattern {pattern} matches no file"
            matched |= hits
    engine = {p.relative_to(ROOT).as_posix() for p in (ROOT / "GliomaMTLLib").rglob("*.py") if "__pycache__" not in p.parts}
    assert engine <= matched, f"engine files not packaged: {sorted(engine - matched)[:5]}"
    assert "GliomaMTLLib/train/card_template.md" in matched
    for bundle in (ROOT / "Resources" / "Models").iterdir():
        for name in ("model.json", "model.safetensors", "card.md"):
            assert f"Resources/Models/{bundle.name}/{name}" in matched
    assert "training/configs/gliomamtl_adult.yaml" in matched
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text and "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" in text


def test_top_level_cmake_adds_the_module_and_points_at_the_icon():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^add_subdirectory\(GliomaMTL\)", text, re.M)
    icon = re.search(r'set\(EXTENSION_ICONURL "[^"]*/main/([^"]+)"\)', text)
    assert icon and (ROOT / icon.group(1)).is_file(), "EXTENSION_ICONURL does not name a file of the repository"
    assert "find_package(Slicer REQUIRED)" in text and "${Slicer_EXTENSION_CPACK}" in text


def test_sample_files_match_their_checksums():
    tree = _tree()
    assign = next(n for n in tree.body if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "SAMPLE_FILES" for t in n.targets))
    samples = ast.literal_eval(assign.value)
    assert set(samples) == {"t1n", "t1c", "t2w", "t2f"}
    for seq, (name, digest) in samples.items():
        data = (MODULE / "Resources" / "SampleData" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name}: checksum in GliomaMTL.py is stale"


def test_engine_names_imported_by_the_module_exist():
    for node in ast.walk(_tree()):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("GliomaMTLLib"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{node.module}.{alias.name} does not exist"


def _run_checker(module_dir: Path) -> subprocess.CompletedProcess:
    python = sys.executable if sys.version_info >= (3, 11) else shutil.which("python3")
    return subprocess.run([python, str(CHECKER), str(module_dir), "--index-dir", str(CHECKER_DIR), "-q"],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHECKER.is_file(), reason=f"Slicer API checker not found at {CHECKER} (../shared/tools/slicer-api)")
def test_slicer_api_checker_finds_every_name_in_both_releases():
    done = _run_checker(MODULE)
    assert done.returncode in (0, 1), done.stderr
    not_found = [line for line in done.stdout.splitlines() if line.startswith("NOT FOUND")]
    assert not not_found, "\n".join(not_found)
    summary = done.stdout.strip().splitlines()[-1]
    assert "refs v5.10.0, v5.12.3" in summary and " 0 not found" in summary, summary
    assert done.returncode == 0


@pytest.mark.skipif(not CHECKER.is_file(), reason=f"Slicer API checker not found at {CHECKER} (../shared/tools/slicer-api)")
def test_slicer_api_checker_would_catch_a_wrong_name(tmp_path):
    """The checker test can fail: a misspelt widget and Slicer function are reported NOT FOUND."""
    copy = tmp_path / "GliomaMTL"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns("SampleData", "__pycache__"))
    source = copy / "GliomaMTL.py"
    text = source.read_text().replace("self.ui.runButton.connect", "self.ui.runButon.connect", 1)
    source.write_text(text.replace("slicer.util.tempDirectory(", "slicer.util.tempDirectry(", 1))
    done = _run_checker(copy)
    assert done.returncode == 1
    assert "runButon" in done.stdout and "tempDirectry" in done.stdout


_FAKE_SLICER_CMAKE = """
cmake_minimum_required(VERSION 3.16)
project(GliomaMTLInstallCheck NONE)
# Stand-ins for what find_package(Slicer) provides: the folder variables and the scripted-module
# macro, which installs the listed scripts and resources under the module folder.
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING OFF)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f IN LISTS MY_SCRIPTS MY_RESOURCES)
    get_filename_component(d "${f}" DIRECTORY)
    install(FILES "${CMAKE_CURRENT_SOURCE_DIR}/${f}" DESTINATION "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${d}")
  endforeach()
endmacro()
add_subdirectory("@MODULE@" GliomaMTL)
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_installed_module_finds_engine_and_models_without_the_repository(tmp_path):
    """Configure and install GliomaMTL/CMakeLists.txt (with stand-ins for Slicer's CMake macros),
    then check that the installed module folder is self-contained: module, .ui, engine, shipped
    bundles, recipes, and that the engine run from there finds its bundles there."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "CMakeLists.txt").write_text(_FAKE_SLICER_CMAKE.replace("@MODULE@", MODULE.as_posix()))
    for args in (["-S", tmp_path / "src", "-B", tmp_path / "build"],
                 ["--install", tmp_path / "build", "--prefix", tmp_path / "inst"]):
        done = subprocess.run(["cmake", *map(str, args)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    installed = tmp_path / "inst" / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    for rel in ("GliomaMTL.py", "Resources/UI/GliomaMTL.ui", "Resources/Icons/GliomaMTL.png",
                "Resources/SampleData/GliomaMTLSample-t1c.nrrd", "GliomaMTLLib/slicer_bridge/jobs.py",
                "GliomaMTLLib/train/card_template.md", "Resources/Models/gliomamtl_adult/model.safetensors",
                "Resources/Models/gliomamtl_pediatric/card.md", "training/configs/gliomamtl_adult.yaml"):
        assert (installed / rel).is_file(), f"{rel} is not installed"
    assert not list(installed.rglob("__pycache__"))
    code = ("import json, GliomaMTLLib.paths as p; from GliomaMTLLib.slicer_bridge import models; "
            "print(json.dumps([str(p.SHIPPED_MODELS_DIR), str(p.recipes_dir()), "
            "[c.id for c in models.list_choices('/nonexistent')]]))")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIOMAMTL_MODELS", "GLIOMAMTL_RECIPES", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-c", code], cwd=installed, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    models_dir, recipes, ids = json.loads(done.stdout)
    assert Path(models_dir) == installed / "Resources" / "Models" and Path(recipes) == installed / "training" / "configs"
    assert {"gliomamtl_adult", "gliomamtl_pediatric"} <= {i.split("@")[0] for i in ids}
