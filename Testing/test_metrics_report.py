"""Markdown result tables."""

from __future__ import annotations

import numpy as np
import pytest

from GliomaMTLLib.metrics.report import markdown_table


def test_markdown_table():
    rows = [
        {"model": "MTL (seg-gated)", "auc": 0.88213, "n": 70, "dice_et": np.float64(0.7466)},
        {"model": "single|task", "auc": float("nan"), "n": 70},
    ]
    text = markdown_table(rows, ["model", ("auc", "AUC"), "n", ("dice_et", "Dice ET")])
    assert text == (
        "| model | AUC | n | Dice ET |\n"
        "| :--- | ---: | ---: | ---: |\n"
        "| MTL (seg-gated) | 0.882 | 70 | 0.747 |\n"
        "| single\\|task | n/a | 70 | n/a |\n"
    )
    assert markdown_table(rows, ["auc"], floatfmt=".1%", missing="-").splitlines()[2:] == ["| 88.2% |", "| - |"]
    assert markdown_table([], ["a"]) == "| a |\n| :--- |\n"
    with pytest.raises(ValueError):
        markdown_table(rows, [])
