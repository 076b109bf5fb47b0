"""Progress protocol: long jobs print one JSON object per line so Slicer, the CLI and tests
read the same stream (``progress``, ``log``, ``done``, ``error`` events)."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, TextIO

ProgressCallback = Callable[[float, str], None]


class JsonLinesReporter:
    """Writes protocol events to a stream, one JSON object per line, flushed immediately."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def _emit(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self.stream.flush()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report overall completion in [0, 1]."""
        self._emit("progress", fraction=round(min(max(float(fraction), 0.0), 1.0), 4), message=message)

    def log(self, message: str, **fields: Any) -> None:
        self._emit("log", message=message, **fields)

    def done(self, **result: Any) -> None:
        self._emit("done", **result)

    def error(self, message: str, **fields: Any) -> None:
        self._emit("error", message=message, **fields)

    def __call__(self, fraction: float, message: str = "") -> None:
        self.progress(fraction, message)


def parse_event(line: str) -> dict[str, Any] | None:
    """Parse one protocol line; returns None for lines that are not protocol events."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
