"""`gliomamtl models`: the shipped models and their fine-tuned versions; which one is active.

::

    gliomamtl models [list] [--json]     every version, its metrics and card status; * marks the active one
    gliomamtl models show VERSION        its model.json summary, lineage and card
    gliomamtl models use VERSION         make it the version that --model NAME gives
    gliomamtl models rollback [NAME]     make the previously active version active again

VERSION is ``NAME@VERSION`` (``gliomamtl_adult@0.2.0-ft.1``), a bare fine-tune version held by
one model, or a model name (its active version).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list model versions, show one, switch the active one, roll back",
                                   description="Shipped models (Resources/Models, $GLIOMAMTL_MODELS) and fine-tuned "
                                   "versions in the model registry ($GLIOMAMTL_DATA/models).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="every version (default action)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = actions.add_parser("show", help="one version in detail")
    show.add_argument("version", help="NAME@VERSION, a fine-tune version or a model name")
    use = actions.add_parser("use", help="make a version the active one of its model")
    use.add_argument("version", help="NAME@VERSION, or a fine-tune version")
    rollback = actions.add_parser("rollback", help="make the previously active version active again")
    rollback.add_argument("name", nargs="?", help="model name (needed when several were switched)")
    parser.set_defaults(func=run, json=False)


def _row(version: Any, active: bool) -> dict[str, Any]:
    metrics = version.metrics_summary()
    held = (f"{metrics['wt_before']:.2f} -> {metrics['wt_after']:.2f} ({metrics['held_out']})"
            if metrics["wt_before"] is not None and metrics["wt_after"] is not None else "")
    return {
        "": "*" if active else "",
        "version": version.id,
        "source": "shipped" if version.shipped else "fine-tuned",
        "parent": version.parent or "",
        "sequences": ",".join(version.meta.get("sequences", [])),
        "tasks": ",".join(version.meta.get("tasks", {})) or "-",
        "held-out WT Dice": held,
        "status": version.status_line(),
    }


def run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.finetune.registry import ModelRegistry

    registry = ModelRegistry()
    action = args.action or "list"
    if action == "list":
        active_ids = {v.id for n in registry.names() if (v := registry.active(n)) is not None}
        rows = [_row(v, v.id in active_ids) for v in registry.versions()]
        if args.json:
            print(json.dumps({"registry": str(registry.root), "versions": rows}, indent=2))
            return 0
        from GliomaMTLLib.metrics.report import markdown_table

        print(markdown_table(rows, list(rows[0]) if rows else ["version"]))
        print(f"* active version of each model; registry {registry.root}")
        return 0
    if action == "show":
        version = registry.get(args.version)
        meta = version.meta
        active = registry.active(version.name)
        summary = {
            "version": version.id, "folder": str(version.folder), "active": active is not None and active.id == version.id,
            "source": "shipped" if version.shipped else "fine-tuned", "description": meta.get("description"),
            "sequences": meta.get("sequences"), "labels": meta.get("labels"), "tasks": meta.get("tasks"),
            "stages": list(meta.get("stages", {})), "sha256": (meta.get("weights") or {}).get("sha256"),
        }
        ft = meta.get("finetune")
        if ft:
            summary["finetune"] = {k: ft.get(k) for k in ("parent", "created", "store", "trained_on", "held_out",
                                                          "recipe", "replay", "carried_over", "genotype_trained",
                                                          "seconds")}
            summary["finetune"]["parent"] = {k: v for k, v in (ft.get("parent") or {}).items() if k != "metrics"}
            summary["metrics_before"] = {k: (ft.get("metrics_before") or {}).get(k) for k in ("n", "dice", "changed_voxels")}
            summary["metrics_after"] = {k: (ft.get("metrics_after") or {}).get(k) for k in ("n", "dice", "changed_voxels")}
        else:
            summary["metrics"] = {k: round(v.get("dice_mean", float("nan")), 3)
                                  for k, v in ((meta.get("metrics") or {}).get("segmentation") or {}).items()}
        print(json.dumps(summary, indent=2, default=str))
        status = version.status_line()
        if status:
            print(f"card: {status}")
        return 0
    if action == "use":
        version = registry.use(args.version)
        print(f"{version.id} is now the active version of {version.name} ({version.folder})")
        return 0
    name, left, now = registry.rollback(args.name)
    target = (f"{now.version}" + (" (shipped)" if now.shipped else "")) if now is not None else (
        f"no active version (name a version, e.g. 'gliomamtl models use {name}@VERSION')")
    print(f"rolled back {name} from {left} to {target}")
    return 0
