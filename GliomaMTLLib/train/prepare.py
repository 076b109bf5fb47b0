"""Prepare stage alone: ``python -m GliomaMTLLib.train.prepare --config <recipe> [--out runs/<name>] [--set ...]``.

Writes the preprocessed arrays of every stage of the recipe into the cache (see GliomaMTLLib.train.data)
and prints where they are; a second call with the same preprocessing reuses them.
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from GliomaMTLLib.train.train import main as train_main

    return train_main([*(argv if argv is not None else sys.argv[1:]), "--prepare-only"])


if __name__ == "__main__":
    sys.exit(main())
