"""The one place where an exception becomes the one line a user of ``gliomamtl`` reads.

Promises:

- a user error (bad input file or value, missing model, unwritable folder, full disk, ...) is
  printed as ``gliomamtl <command>: error: <message>`` on one line and exits with status 1;
- every ``OSError`` names the path(s) and the reason (``/data/out: Permission denied``);
- anything else is a bug: one line ``internal error`` naming the exception, exit status 3,
  and a hint to rerun with ``--debug``;
- ``--debug`` (anywhere on the command line) or ``GLIOMAMTL_DEBUG=1`` prints the traceback too.

Imports nothing heavy (the command line reads it before parsing arguments).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any, Callable, Sequence, TextIO

DEBUG_FLAG = "--debug"
#: Exit status of a user error (argparse uses 2 for a bad command line).
EXIT_USER_ERROR = 1
#: Exit status of an unexpected exception (a bug).
EXIT_INTERNAL_ERROR = 3
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or choose another --out folder",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another --out folder",
    errno.EROFS: "the file system is read-only; choose another --out folder",
    errno.EACCES: "no permission; choose a folder you can write to",
}


def split_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether tracebacks were asked for (flag or ``GLIOMAMTL_DEBUG``)."""
    from GliomaMTLLib.paths import debug_enabled

    rest = [a for a in argv if a != DEBUG_FLAG]
    return rest, len(rest) != len(argv) or debug_enabled()


def describe_os_error(exc: OSError) -> str:
    """``<path>[ -> <path2>]: <reason>[ (<what to do>)]`` for an OS error."""
    reason = exc.strerror or (str(exc.args[-1]) if exc.args else type(exc).__name__)
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    hint = _ERRNO_HINTS.get(exc.errno or -1)
    text = f"{' -> '.join(paths)}: {reason}" if paths else reason
    return text + (f" ({hint})" if hint and hint not in text else "")


def is_user_error(exc: BaseException) -> bool:
    """True for errors caused by the input, the options or the machine, not by a bug."""
    return isinstance(exc, (ValueError, OSError, KeyError, MemoryError))


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (user errors as they are, OS errors with path and reason)."""
    # input errors that are also OSErrors (MissingFileError) carry their own message and ``paths``
    if isinstance(exc, OSError) and not hasattr(exc, "paths"):
        text = describe_os_error(exc)
    elif isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    elif isinstance(exc, MemoryError):
        text = "out of memory" + (f" ({exc})" if str(exc) else "") + "; close other programs or use a smaller input"
    else:
        text = str(exc) or type(exc).__name__
    if not is_user_error(exc):
        text = f"internal error: {type(exc).__name__}: {text}"
    return " ".join(text.split())


def print_error(command: str | None, exc: BaseException, debug: bool, stream: TextIO | None = None) -> int:
    """Print ``exc`` for the user (traceback first when ``debug``); returns the exit status."""
    stream = stream if stream is not None else sys.stderr
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    prefix = f"gliomamtl {command}" if command else "gliomamtl"
    line = one_line(exc)
    if not is_user_error(exc) and not debug:
        line += f" (rerun with {DEBUG_FLAG} or GLIOMAMTL_DEBUG=1 for the traceback)"
    print(f"{prefix}: error: {line}", file=stream)
    return EXIT_USER_ERROR if is_user_error(exc) else EXIT_INTERNAL_ERROR


def run_guarded(func: Callable[[Any], Any], args: Any, command: str | None, debug: bool) -> int:
    """Call ``func(args)``; any exception (not ``SystemExit``) becomes one line.

    Ctrl-C (``KeyboardInterrupt``) prints ``interrupted`` and exits 130, as shells expect.
    """
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"gliomamtl {command or ''}: interrupted".replace("  ", " "), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - this is the top of the command line
        return print_error(command, exc, debug)
