"""`gliomamtl correct`: store a reader's corrected label map (and known genotype) with its case.

::

    gliomamtl correct CASE --labels corrected.nii.gz [--idh mutant] [--codel intact] [--braf fusion]
                      [--store DIR] [--replace] [--model M] [--prediction seg.nii.gz]

CASE is a case folder or sequence files, as for ``predict``. The entry (copied sequences, the
corrected labels, genotype, time, model version, changed voxels, sha256 of every file) is written
atomically into the correction store (see :mod:`GliomaMTLLib.finetune.store`).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR",
                        help="correction store folder (default: $GLIOMAMTL_DATA/corrections, else the user data folder)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "correct",
        help="store a corrected label map (and known genotype) of a case in the correction store",
        description="Check a reader's corrected label map against the case and the model, and store it with a copy "
        "of the case's sequences, the genotype the reader knows, the model version whose prediction was corrected "
        "and the number of voxels changed. Fine-tune on the store with 'gliomamtl finetune'.",
    )
    parser.add_argument("case", nargs="+", metavar="CASE", help="case folder, or up to four sequence files")
    parser.add_argument("--labels", required=True, metavar="FILE",
                        help="corrected label map on the case's grid (BraTS 2023 values 1 NCR, 2 ED, 3 ET, or 2020 with ET = 4)")
    parser.add_argument("--idh", metavar="CLASS", help="IDH status if known: wildtype or mutant")
    parser.add_argument("--codel", metavar="CLASS", help="1p/19q status if known: intact or codeleted")
    parser.add_argument("--braf", metavar="CLASS", help="BRAF status if known: fusion, v600e or other")
    add_store_argument(parser)
    parser.add_argument("--replace", action="store_true", help="replace the stored correction of this case")
    parser.add_argument("--model", default=None,
                        help="model (name, NAME@VERSION or folder) whose prediction was corrected (default: the active "
                             "version of gliomamtl_adult)")
    parser.add_argument("--prediction", metavar="FILE",
                        help="the predicted label map the reader started from (to count changed voxels); "
                             "default: predict it now with --model")
    parser.add_argument("--case-id", help="case id in the store (default: from the file names)")
    parser.add_argument("--json", action="store_true", help="print the stored entry as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.finetune.correct import add_correction

    source = args.case[0] if len(args.case) == 1 else list(args.case)
    entry = add_correction(
        source, args.labels, store=args.store, model=args.model,
        genotype={"idh": args.idh, "codel_1p19q": args.codel, "braf": args.braf},
        prediction=args.prediction, case_id=args.case_id, replace=args.replace,
    )
    if args.json:
        print(json.dumps({"entry": entry.entry_id, "folder": str(entry.folder), **entry.meta}, indent=2))
    else:
        s = entry.summary()
        print(f"stored {s['case_id']} in {entry.folder} (corrects {s['model']}; {s['changed_voxels']} voxel(s) changed"
              + (f"; {s['genotype']}" if s["genotype"] else "") + ")", file=sys.stdout)
    return 0
