"""Shared pytest fixtures."""

import os

import pytest
import torch

#: Environment variables naming the folders GliomaMTL writes to (see GliomaMTLLib.paths).
_USER_FOLDERS = ("GLIOMAMTL_CACHE", "GLIOMAMTL_DATA")


@pytest.fixture(scope="session", autouse=True)
def user_folders_in_tmp(tmp_path_factory):
    """The suite writes its caches (ONNX exports, anatomy) and user data (corrections, registry)
    under the session's temporary folder, never into the user's home; previous values come back
    afterwards."""
    base = tmp_path_factory.mktemp("gliomamtl_home")
    before = {name: os.environ.get(name) for name in _USER_FOLDERS}
    os.environ["GLIOMAMTL_CACHE"] = str(base / "cache")
    os.environ["GLIOMAMTL_DATA"] = str(base / "data")
    yield base
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """Tiny random cascade bundle (the CLI tests' model); one 48^3 main window covers a whole
    test case. A module may override it with a bundle of its own."""
    from GliomaMTLLib.inference.fixtures import make_random_bundle

    folder = tmp_path_factory.mktemp("models") / "tiny"
    make_random_bundle(folder, main_features=(4, 8), crop_size=(48, 48, 48), localizer_features=(4, 8),
                       input_size=(16, 16, 16), localizer_options={"margin_mm": 0.0})
    return folder


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module of tiny-volume tests (intra-op threads only add hand-off
    cost there on a loaded 2-core machine); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
