"""Markdown tables for the result reports (papers' tables, benchmark output)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _cell(value: Any, floatfmt: str, missing: str) -> str:
    if value is None:
        return missing
    if _is_number(value) and not isinstance(value, numbers.Integral):
        value = float(value)
        return missing if math.isnan(value) else format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    *,
    floatfmt: str = ".3f",
    missing: str = "n/a",
) -> str:
    """Render rows as a GitHub-flavoured Markdown table.

    Args:
        rows: one mapping per table row.
        columns: keys to show, in order; a ``(key, header)`` pair sets a header other than the key.
        floatfmt: format spec for non-integer numbers (``format(x, floatfmt)``).
        missing: text for absent keys, ``None`` and NaN.

    Returns:
        The table (header, separator, one line per row), ending with a newline. Columns whose
        present values are all numbers are right-aligned, others left-aligned; ``|`` and newlines
        inside cells are escaped.

    Raises:
        ValueError: if ``columns`` is empty.
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    headers = [c if isinstance(c, str) else c[1] for c in columns]

    def numeric(key: str) -> bool:
        present = [row[key] for row in rows if row.get(key) is not None]
        return bool(present) and all(_is_number(v) for v in present)

    lines = [
        "| " + " | ".join(_cell(h, floatfmt, missing) for h in headers) + " |",
        "| " + " | ".join("---:" if numeric(k) else ":---" for k in keys) + " |",
    ]
    lines += ["| " + " | ".join(_cell(row.get(k), floatfmt, missing) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"
