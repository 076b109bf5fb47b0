"""The command line parses its arguments before anything heavy is imported.

`gliomamtl --help` must stay fast: torch, MONAI, NumPy, SciPy and SimpleITK load only inside the
function that runs a command. Checked behaviourally (which modules a fresh interpreter holds after
building the parser), never by timing; the times are in ``scripts/bench_predict.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "monai", "numpy", "scipy", "SimpleITK", "matplotlib", "onnxruntime", "yaml")


def _modules_after(code: str) -> set[str]:
    """Top-level packages loaded by a fresh interpreter after running ``code``."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_building_the_parser_imports_nothing_heavy():
    loaded = _modules_after("from GliomaMTLLib.cli import build_parser, COMMAND_MODULES\n"
                            "parser = build_parser()\n"
                            "assert len(COMMAND_MODULES) >= 5")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("module", ["GliomaMTLLib", "GliomaMTLLib.progress", "GliomaMTLLib.labels", "GliomaMTLLib.paths",
                                    "GliomaMTLLib.inference.options", "GliomaMTLLib.inference.device",
                                    "GliomaMTLLib.inference.engines"])
def test_light_modules_import_nothing_heavy(module):
    loaded = _modules_after(f"import {module}")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_every_subcommand_help_runs_without_heavy_imports():
    """``gliomamtl <command> --help`` for every registered command, in one interpreter."""
    code = (
        "import contextlib, io, sys\n"
        "from GliomaMTLLib.cli import build_parser\n"
        "parser = build_parser()\n"
        "commands = list(parser._subparsers._group_actions[0].choices)\n"
        "for name in commands:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            parser.parse_args([name, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    assert 'usage: gliomamtl ' + name in out.getvalue(), name\n"
        "print(len(commands), file=sys.stderr)\n"
    )
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_prediction_whose_onnx_export_is_cached_never_imports_monai(tmp_path, monkeypatch):
    """MONAI (seconds to import) is needed to build a PyTorch network or slide windows; a crop-mode
    model whose ONNX export is cached needs neither."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("GLIOMAMTL_CACHE", str(tmp_path / "cache"))
    from GliomaMTLLib.inference import make_random_bundle

    # one window covers the whole case in each stage: no sliding windows (those are MONAI's)
    make_random_bundle(tmp_path / "b", main_features=(4, 8), crop_size=(48, 48, 48), localizer_features=(4, 8),
                       input_size=(32, 32, 32))
    code = (
        "from GliomaMTLLib.inference import Predictor\n"
        "from GliomaMTLLib.inference.fixtures import phantom_case\n"
        "from GliomaMTLLib.io.geometry import Geometry\n"
        "g = Geometry(size=(24, 24, 20), spacing=(4.0, 4.0, 4.0), origin=(0.0, 0.0, 0.0), "
        "direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))\n"
        f"p = Predictor({str(tmp_path / 'b')!r}, device='cpu', engine='onnx')\n"
        "pred = p.predict(phantom_case(g))\n"
        "assert pred.labels.shape == (20, 24, 24)\n"
    )
    _modules_after(code)  # first run: exports the networks into the cache (builds them: MONAI)
    loaded = _modules_after(code)
    assert "onnxruntime" in loaded and "monai" not in loaded
