"""`GliomaMTLLib.cli.errors`: every exception reaches the user as one line with the right exit status."""

from __future__ import annotations

import errno
import io

from GliomaMTLLib.cli import errors


def _raiser(exc: BaseException):
    def func(_args):
        raise exc

    return func


def test_os_error_names_path_reason_and_hint(capsys):
    status = errors.run_guarded(_raiser(OSError(errno.ENOSPC, "No space left on device", "/data/out/x.nii.gz")),
                                None, "predict", debug=False)
    err = capsys.readouterr().err
    assert status == errors.EXIT_USER_ERROR
    assert err.count("\n") == 1
    assert "gliomamtl predict: error: /data/out/x.nii.gz: No space left on device" in err
    assert "disk is full" in err


def test_bug_is_internal_error_with_debug_hint(capsys):
    status = errors.run_guarded(_raiser(ZeroDivisionError("division by zero")), None, "explain", debug=False)
    err = capsys.readouterr().err
    assert status == errors.EXIT_INTERNAL_ERROR
    assert "internal error: ZeroDivisionError: division by zero" in err
    assert "--debug" in err and "Traceback" not in err


def test_debug_prints_traceback_first(capsys):
    errors.run_guarded(_raiser(ValueError("bad value")), None, "predict", debug=True)
    err = capsys.readouterr().err
    assert err.index("Traceback") < err.index("gliomamtl predict: error: bad value")


def test_ctrl_c_is_one_line_and_status_130(capsys):
    status = errors.run_guarded(_raiser(KeyboardInterrupt()), None, "finetune", debug=False)
    err = capsys.readouterr().err
    assert status == errors.EXIT_INTERRUPTED == 130
    assert err.strip() == "gliomamtl finetune: interrupted"


def test_debug_flag_is_removed_anywhere(monkeypatch):
    monkeypatch.delenv("GLIOMAMTL_DEBUG", raising=False)
    assert errors.split_debug_flag(["predict", "--debug", "case"]) == (["predict", "case"], True)
    assert errors.split_debug_flag(["predict", "case"]) == (["predict", "case"], False)
    monkeypatch.setenv("GLIOMAMTL_DEBUG", "1")
    assert errors.split_debug_flag(["predict"])[1] is True


def test_multiline_messages_are_folded_to_one_line():
    stream = io.StringIO()
    errors.print_error("predict", ValueError("first line\n  second line"), debug=False, stream=stream)
    assert stream.getvalue() == "gliomamtl predict: error: first line second line\n"
