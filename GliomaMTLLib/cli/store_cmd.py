"""`gliomamtl store list|show|remove`: look into and prune the correction store.

::

    gliomamtl store list [--store DIR] [--json]
    gliomamtl store show ENTRY [--store DIR] [--verify]
    gliomamtl store remove ENTRY [ENTRY ...] [--store DIR]

``remove`` prints every entry it deleted; nothing is deleted silently.
"""

from __future__ import annotations

import argparse
import json

from GliomaMTLLib.cli.correct_cmd import add_store_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="list, show or remove corrections in the correction store",
                                   description="The correction store written by 'gliomamtl correct'.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="one line per stored correction")
    add_store_argument(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = actions.add_parser("show", help="everything recorded about one entry")
    show.add_argument("entry", help="entry or case id")
    add_store_argument(show)
    show.add_argument("--verify", action="store_true", help="re-hash the files against their recorded sha256")
    remove = actions.add_parser("remove", help="delete entries (says what it removed)")
    remove.add_argument("entry", nargs="+", help="entry or case id(s)")
    add_store_argument(remove)
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.finetune.store import CorrectionStore

    if not args.action:
        args._parser.print_help()
        return 2
    store = CorrectionStore(args.store)
    if args.action == "list":
        rows = [e.summary() for e in store.entries()]
        if args.json:
            print(json.dumps({"store": str(store.root), "entries": rows}, indent=2))
            return 0
        from GliomaMTLLib.metrics.report import markdown_table

        if rows:
            print(markdown_table(rows, ["entry", "case_id", "created", "model", "changed_voxels", "tumor_voxels", "genotype"]))
        print(f"{len(rows)} correction(s) in {store.root}")
        return 0
    if args.action == "show":
        entry = store.get(args.entry)
        print(json.dumps({"entry": entry.entry_id, "folder": str(entry.folder), **entry.meta}, indent=2))
        if args.verify:
            problems = entry.verify()
            print("\n".join(problems) if problems else f"{len(entry.meta.get('files', {}))} file(s) match their sha256")
            return 1 if problems else 0
        return 0
    entries = [store.get(e) for e in args.entry]  # every id checked before anything is deleted
    for entry in entries:
        removed = store.remove(entry.entry_id)
        print(f"removed {removed.entry_id} (case {removed.case_id}, stored {removed.meta.get('created')}, "
              f"{len(removed.meta.get('files', {}))} file(s)) from {store.root}")
    return 0
