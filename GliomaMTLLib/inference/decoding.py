"""How the main network's class probabilities become a label map.

Two decoders, chosen by ``model.json`` ``"decoding"``:

- ``argmax`` (the default): each voxel takes the most probable of background, NCR, ED and ET.
- ``regions``: the nested BraTS regions are decided one after the other, each by its own
  probability: whole tumor where P(NCR + ED + ET) > ``wt``, tumor core where P(NCR + ET) > ``tc``
  inside it, enhancing where P(ET) > ``et`` inside the core; the rest of the core is NCR and the
  rest of the whole tumor edema. It needs the label set 1 NCR, 2 ED, 3 ET.

``{"mode": "regions", "wt": 0.5, "tc": 0.4, "et": 0.4}`` is the model.json form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from GliomaMTLLib.labels import ED, ET, NCR

MODES: tuple[str, ...] = ("argmax", "regions")
#: The regions the ``regions`` decoder reads, as label values (:func:`regions_for_labels` names).
NESTED_REGIONS: dict[str, tuple[int, ...]] = {"WT": (NCR, ED, ET), "TC": (NCR, ET), "ET": (ET,)}


@dataclass(frozen=True)
class Decoding:
    """A decoder and, for ``regions``, its three thresholds (each in (0, 1))."""

    mode: str = "argmax"
    wt: float = 0.5
    tc: float = 0.5
    et: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"decoding mode {self.mode!r} is not one of {list(MODES)}")
        for name in ("wt", "tc", "et"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"decoding threshold {name}={value!r} must be a number between 0 and 1 (exclusive)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Decoding":
        """From ``model.json``'s ``"decoding"`` (None or absent: the argmax).

        Raises:
            ValueError: not a mapping, an unknown key or mode, or a threshold outside (0, 1).
        """
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"decoding must be a mapping such as {{\"mode\": \"argmax\"}}, got {data!r}")
        unknown = set(data) - {"mode", "wt", "tc", "et"}
        if unknown:
            raise ValueError(f"decoding has unknown key(s) {sorted(unknown)}; expected mode, wt, tc, et")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        if self.mode == "argmax":
            return {"mode": "argmax"}
        return {"mode": self.mode, "wt": self.wt, "tc": self.tc, "et": self.et}

    def labels(self, foreground: np.ndarray) -> np.ndarray:
        """uint8 label map from the foreground class probabilities ``foreground`` (shape
        ``(classes - 1, *spatial)``, class ``k`` at index ``k - 1``; background is 1 minus their sum).

        The argmax sends ties to the background and then to the lower label.
        """
        if self.mode == "argmax":
            best = foreground.argmax(axis=0)
            best_p = np.take_along_axis(foreground, best[None], axis=0)[0]
            return np.where(best_p > 1.0 - foreground.sum(axis=0), best + 1, 0).astype(np.uint8)
        if foreground.shape[0] != 3:
            raise ValueError(f"region decoding needs 3 foreground classes (NCR, ED, ET), got {foreground.shape[0]}")
        ncr, ed, et = foreground[NCR - 1], foreground[ED - 1], foreground[ET - 1]
        labels = np.zeros(foreground.shape[1:], np.uint8)
        whole = (ncr + ed + et) > self.wt
        core = whole & ((ncr + et) > self.tc)
        labels[whole] = ED
        labels[core] = NCR
        labels[core & (et > self.et)] = ET
        return labels

    def check_regions(self, regions: Mapping[str, tuple[int, ...]]) -> None:
        """Raise ValueError when ``regions`` decoding cannot apply to a model with these regions."""
        if self.mode != "regions":
            return
        have = {name: tuple(sorted(members)) for name, members in regions.items()}
        want = {name: tuple(sorted(members)) for name, members in NESTED_REGIONS.items()}
        if have != want:
            raise ValueError(f"region decoding needs the regions {want} (labels 1 NCR, 2 ED, 3 ET); the model has {have}")


def foreground_from_regions(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """The foreground class probabilities (NCR, ED, ET) from nested region probabilities."""
    return np.stack([tc - et, wt - tc, et])
