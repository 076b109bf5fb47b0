"""A child process of the engine, read without blocking, with its progress state and a cancel.

The panel starts the child (``slicer.util.launchConsoleProcess``, which returns a text-mode
``Popen`` with stderr merged into stdout) and wraps it in a :class:`ChildJob`. A reader thread
moves each output line into a queue; the GUI thread calls :meth:`ChildJob.poll` from a timer,
so Slicer never waits on the child. Lines that are protocol events (:mod:`GliomaMTLLib.progress`)
update the state; other lines are kept as the log shown when something fails.

Cancel kills the whole process tree: ``PythonSlicer`` is a launcher that starts ``python-real``,
so killing only the launcher would leave the worker running.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from GliomaMTLLib.progress import parse_event

LOG_LINES_KEPT = 400


class ProcessLike(Protocol):
    pid: int
    stdout: Any

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


@dataclass
class JobState:
    """What the panel shows about a job."""

    fraction: float = 0.0
    message: str = ""
    result: dict[str, Any] | None = None  # the ``done`` event
    error: str | None = None  # the ``error`` event's message, or why the process failed
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT))


class ChildJob:
    """One running engine command.

    Args:
        process: the started child (stdout a text stream, stderr merged into it).
        expects_done: True for commands run with ``--progress-json``: success then also needs a
            ``done`` event, which the engine prints only after every output is in place.
        command: the command line, kept for error details.
    """

    def __init__(self, process: ProcessLike, *, expects_done: bool = True, command: list[str] | None = None) -> None:
        self.process = process
        self.expects_done = expects_done
        self.command = list(command or [])
        self.state = JobState()
        self.cancelled = False
        self.started = time.monotonic()
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader_done = False
        self._thread = threading.Thread(target=self._read, name=f"gliomamtl-job-{process.pid}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = self.process.stdout
        try:
            for line in iter(stream.readline, ""):
                self._lines.put(line.rstrip("\r\n"))
        except (ValueError, OSError, UnicodeDecodeError) as exc:  # stream closed by a kill, or bad bytes
            self._lines.put(f"(output reader stopped: {exc})")
        finally:
            self._lines.put(None)

    def poll(self) -> list[dict[str, Any]]:
        """Take every line that arrived (never blocks); returns the protocol events among them."""
        events: list[dict[str, Any]] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._reader_done = True
                continue
            event = parse_event(line)
            if event is None:
                if line.strip():
                    self.state.log.append(line)
                continue
            events.append(event)
            self._apply(event)
        return events

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            try:
                self.state.fraction = min(max(float(event.get("fraction", 0.0)), 0.0), 1.0)
            except (TypeError, ValueError):
                pass
            self.state.message = str(event.get("message", ""))
        elif kind == "log":
            self.state.log.append(str(event.get("message", "")))
        elif kind == "done":
            self.state.result = event
            self.state.fraction = 1.0
        elif kind == "error":
            self.state.error = str(event.get("message") or "the engine reported an error without a message")

    @property
    def finished(self) -> bool:
        """True once the process has exited and all of its output has been read."""
        return self._reader_done and self.process.poll() is not None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def outcome(self) -> str:
        """``running``, ``cancelled``, ``done`` or ``error`` (call :meth:`poll` first)."""
        if not self.finished:
            return "running"
        if self.cancelled:
            return "cancelled"
        complete = self.state.result is not None or not self.expects_done
        if self.returncode == 0 and self.state.error is None and complete:
            return "done"
        return "error"

    def error_message(self) -> str:
        """One line saying why the job failed (the engine's error, else the exit status)."""
        if self.state.error:
            return self.state.error
        code = self.returncode
        if code == 0 and self.expects_done:
            return "the engine exited without reporting that its outputs are complete"
        last = next((line for line in reversed(self.state.log) if "error" in line.lower()), None)
        return last or f"the engine exited with status {code}"

    def details(self) -> str:
        """Command line and the output kept, for the error dialog's details."""
        return "command: " + " ".join(self.command) + "\n\n" + "\n".join(self.state.log)

    def cancel(self) -> None:
        """Kill the child and everything it started; the job's outcome becomes ``cancelled``."""
        self.cancelled = True
        kill_process_tree(self.process)

    def wait(self, timeout: float | None = None, interval: float = 0.05,
             on_events: Callable[[list[dict[str, Any]]], None] | None = None) -> str:
        """Block until the job ends (for scripts and self-tests); returns :meth:`outcome`.

        Raises:
            TimeoutError: still running after ``timeout`` seconds (the job is cancelled first).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.poll()
            if events and on_events:
                on_events(events)
            if self.finished:
                self.poll()
                return self.outcome()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"job did not finish within {timeout} s and was cancelled")
            time.sleep(interval)


def descendant_pids(pid: int) -> list[int]:
    """Process ids of all descendants of ``pid`` (children first), from psutil or ``ps``."""
    try:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    except ImportError:
        pass
    if sys.platform == "win32":
        return []  # taskkill /T handles the tree
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_process_tree(process: ProcessLike) -> None:
    """Kill ``process`` and all its descendants (idempotent; a process already gone is fine)."""
    if process.poll() is not None and not descendant_pids(process.pid):
        return
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        # Collect the tree first: once the parent is gone its children are re-parented away.
        for pid in reversed(descendant_pids(process.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        process.kill()
    except (ProcessLookupError, OSError):
        pass
    try:
        process.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a process that does not die in 10 s is reported by the caller's poll
        pass
