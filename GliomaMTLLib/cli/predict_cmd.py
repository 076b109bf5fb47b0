"""`gliomamtl predict`: segmentation, genotype and volumes for one case or a cohort of case folders.

One case::

    gliomamtl predict CASE_FOLDER --out DIR
    gliomamtl predict t1n.nii.gz t1c.nii.gz t2w.nii.gz t2f.nii.gz --out DIR

writes into DIR ``<case_id>_seg.nii.gz`` (and ``<case_id>_prob_{WT,TC,ET}.nii.gz`` with
``--probabilities``), ``report.png`` and, last, ``report.json`` (see
:mod:`GliomaMTLLib.inference.report`).

A cohort::

    gliomamtl predict --cohort ROOT --out DIR

runs every case folder under ROOT (:func:`GliomaMTLLib.io.list_case_folders`) into
``DIR/<folder name>/``. A case whose ``report.json`` exists is done and skipped on a rerun (redone
with ``--overwrite``); a case that fails is recorded in ``DIR/errors.csv`` and the run goes on; each
case's warnings are printed as it finishes. ``DIR/cohort_summary.json`` and ``DIR/summary.csv`` list
every case's status, volumes, genotype (or "not available (reason)") and warnings. Exit code 0 when
every case is done, 1 when some failed.

Output folders (:mod:`GliomaMTLLib.io.output_folder`): ``--out`` is checked before anything is
computed (a file, under a file, read-only, full disk: a one-line error); temporary files of a
killed run are removed; only this case's files are replaced, and a folder holding a finished case
(this one or another) needs ``--overwrite`` outside cohort mode. With ``--progress-json`` the last
line is exactly one ``done`` (after every output file is in place) or one ``error`` event.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from GliomaMTLLib.inference.options import DEFAULT_MODEL, DEVICE_CHOICES, ENGINES  # imports nothing heavy

MAX_CASE_FILES = 4
#: Options that give one sequence file each, whatever its name.
SEQUENCE_OPTIONS = {"t1n": "T1", "t1c": "T1 post-contrast", "t2w": "T2", "t2f": "FLAIR"}
ERRORS_CSV = "errors.csv"
SUMMARY_JSON = "cohort_summary.json"
SUMMARY_CSV = "summary.csv"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``predict`` and ``demo``."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"bundle name (searched in $GLIOMAMTL_MODELS, then Resources/Models) or folder "
                             f"(default {DEFAULT_MODEL})")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="auto: CUDA GPU when available, else CPU (default); cuda fails clearly without a GPU")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time flips: average the segmentation over mirror images (4x the main network's "
                        "time: about 2 s more per case on a 2-core CPU; default: the model's model.json \"tta\"; "
                        "the shipped models flip on a GPU only)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto: ONNX Runtime on the CPU when installed (faster; the first run with a model "
                             "exports it once into the cache), else PyTorch; torch or onnx to force one")
    parser.add_argument("--labels", choices=("2023", "2020"), default="2023",
                        help="label values written: 2023 (1 NCR, 2 ED, 3 ET; default) or 2020 (ET written as 4)")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write region probability maps <case_id>_prob_{WT,TC,ET}.nii.gz (float32)")
    parser.add_argument("--seg-nrrd", action="store_true",
                        help="also write <case_id>_seg.seg.nrrd: a 3D Slicer segmentation with named, coloured "
                             "segments and standard terminology")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the finished outputs of a case already in --out (with --cohort: redo "
                             "finished cases too); without it such a folder is refused")
    parser.add_argument("--et-min-ml", type=float, default=None,
                        help="relabel enhancing tumor as necrotic core when its volume is below this (ml); "
                             "default from the model (0.5 ml), 0 disables")
    parser.add_argument("--et-min-confidence", type=float, default=None,
                        help="relabel enhancing tumor smaller than the model's et_confidence_max_ml as necrotic "
                             "core when its mean probability is below this (0-1); default from the model, 0 disables")
    parser.add_argument("--min-component-ml", type=float, default=None,
                        help="remove tumor components smaller than this (ml), keeping the largest; default from "
                             "the model, 0 disables")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment a case (or a cohort), predict its genotype, write the label map and a report",
        description="Segment glioma sub-regions (NCR/ED/ET), predict genotype (e.g. IDH, 1p/19q) and measure "
        "volumes for one case (a folder or up to four sequence files) or, with --cohort, for every case "
        "folder under a root. Outputs lie on the exact grid of the input sequences.",
        epilog="Writes into --out: <case_id>_seg.nii.gz, <case_id>_prob_{WT,TC,ET}.nii.gz (with "
        "--probabilities), report.png and, last, report.json (genotype, volumes, timings, warnings, model and "
        "sha256, input files). With --cohort: one sub-folder per case (a case whose report.json exists is "
        "skipped), errors.csv, summary.csv and cohort_summary.json.",
    )
    parser.add_argument("case", nargs="*", metavar="CASE",
                        help="case folder, or up to four sequence files (names must identify the sequence)")
    for key, title in SEQUENCE_OPTIONS.items():
        parser.add_argument(f"--{key}", metavar="FILE",
                            help=f"the {title} file, whatever its name (instead of CASE)")
    parser.add_argument("--cohort", metavar="DIR", help="run every case folder under DIR instead of one case")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--age", type=float, metavar="YEARS",
                        help="the patient's age at the scan: models with an age-aware genotype use it (one case only)")
    add_model_arguments(parser)
    parser.add_argument("--progress-json", action="store_true",
                        help="print progress as JSON lines (event progress/log/done/error) on stdout")
    parser.set_defaults(func=run)


def _reporter(args: argparse.Namespace) -> Any:
    if not getattr(args, "progress_json", False):
        return None
    from GliomaMTLLib.progress import JsonLinesReporter

    return JsonLinesReporter(sys.stdout)


def check_options(args: argparse.Namespace) -> None:
    """Option values that make no sense, named by their flag.

    Raises:
        ValueError: e.g. ``--et-min-ml must be a number >= 0 (ml), got -1``.
    """
    age = getattr(args, "age", None)
    if age is not None:
        from GliomaMTLLib.io.case import check_age

        check_age(age, "--age")
        if getattr(args, "cohort", None):
            raise ValueError("--age is the age of one patient: it cannot be given with --cohort")
    for flag in ("et_min_ml", "min_component_ml"):
        value = getattr(args, flag, None)
        if value is not None and not (value >= 0 and value != float("inf")):
            raise ValueError(f"--{flag.replace('_', '-')} must be a number >= 0 (ml; 0 disables the rule), got {value:g}")
    confidence = getattr(args, "et_min_confidence", None)
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise ValueError(f"--et-min-confidence must be a probability in [0, 1] (0 disables the rule), got {confidence:g}")


def prepare_out(folder: str | Path) -> Path:
    """``--out`` checked writable (before any computation) and cleaned of a killed run's temporary files."""
    from GliomaMTLLib.io.output_folder import clean_partial_files, prepare_output_folder

    out = prepare_output_folder(folder)
    clean_partial_files(out)
    return out


def make_predictor(args: argparse.Namespace, progress: Any = None) -> Any:
    from GliomaMTLLib.inference import Predictor

    overrides = {"et_min_ml": args.et_min_ml, "min_component_ml": args.min_component_ml,
                 "et_min_confidence": getattr(args, "et_min_confidence", None)}
    return Predictor(args.model, device=args.device, engine=args.engine, postprocess=overrides, progress=progress,
                     tta=getattr(args, "tta", None))


def predict_one(predictor: Any, source: Any, out_dir: Path, args: argparse.Namespace,
                case_id: str | None = None) -> tuple[Any, dict[str, Path], Any]:
    """Read, predict and write one case; returns (case, written files, prediction).

    Only this case's files in ``out_dir`` are replaced (:func:`GliomaMTLLib.io.output_folder.plan_case_outputs`;
    ``args.overwrite`` allows replacing a finished case); what was replaced is added to the warnings.
    """
    from GliomaMTLLib.inference import write_prediction
    from GliomaMTLLib.io.output_folder import clean_partial_files, plan_case_outputs

    t0 = time.perf_counter()
    case = predictor.read(source, case_id=case_id)
    if getattr(args, "age", None) is not None:
        case.age_years = float(args.age)
    read_s = time.perf_counter() - t0
    plan = plan_case_outputs(out_dir, case.case_id, overwrite=bool(getattr(args, "overwrite", False)))
    prediction = predictor.predict(case)
    prediction.timings = {"read": read_s, **prediction.timings}
    prediction.warnings.extend(plan.notes)
    clean_partial_files(out_dir)
    (Path(out_dir) / "report.json").unlink(missing_ok=True)  # the folder no longer claims a finished case
    seg_nrrd = None
    if getattr(args, "seg_nrrd", False):  # before write_prediction, whose report.json must come last
        from GliomaMTLLib.io.segfile import seg_nrrd_filename, write_seg_nrrd

        seg_nrrd = write_seg_nrrd(Path(out_dir) / seg_nrrd_filename(prediction.case_id), prediction.labels,
                                  prediction.geometry, prediction.label_names)
    written = write_prediction(prediction, out_dir, convention=args.labels, probabilities=args.probabilities,
                               images=case.images, stale=plan.stale,
                               extra={"seg_nrrd": seg_nrrd} if seg_nrrd is not None else None)
    return case, written, prediction


def summary_lines(prediction: Any, written: dict[str, Path]) -> list[str]:
    """Human-readable summary of one prediction."""
    vols = ", ".join(f"{k} {v:.1f} ml" for k, v in prediction.volumes_ml.items() if k in prediction.probabilities)
    from GliomaMTLLib.inference.genotype_call import describe_call

    lines = [f"case {prediction.case_id}: {vols or 'no volumes'}"]
    for task, entry in prediction.calls().items():
        lines.append(f"  {task}: {describe_call(entry)}")
    total = sum(prediction.timings.values())
    lines.append(f"  time {total:.1f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in prediction.timings.items()) + ")")
    for warning in prediction.warnings:
        lines.append(f"  warning: {warning}")
    lines.append("  outputs: " + ", ".join(str(p) for p in written.values()))
    return lines


def case_source(args: argparse.Namespace) -> Any:
    """The case to read: ``--t1n/--t1c/--t2w/--t2f`` files as a mapping, else a folder or the file list.

    Raises:
        ValueError: no case, a case and --cohort, too many files, or files given both ways.
    """
    explicit = {key: getattr(args, key) for key in SEQUENCE_OPTIONS if getattr(args, key, None)}
    if args.cohort and (args.case or explicit):
        raise ValueError("give either CASE (a folder or files) or --cohort DIR, not both")
    if explicit and args.case:
        raise ValueError("give the sequence files either as CASE or with --t1n/--t1c/--t2w/--t2f, not both")
    if args.cohort:
        return None
    if explicit:
        return explicit
    if not args.case:
        raise ValueError("give a case (a folder, up to four sequence files, or --t1n/--t1c/--t2w/--t2f FILE) "
                         "or --cohort DIR")
    if len(args.case) > MAX_CASE_FILES:
        raise ValueError(f"at most {MAX_CASE_FILES} sequence files per case, got {len(args.case)}")
    return args.case[0] if len(args.case) == 1 else list(args.case)


def run(args: argparse.Namespace) -> int:
    """``gliomamtl predict``: with ``--progress-json`` the last event is one ``done`` or one ``error``."""
    from GliomaMTLLib.cli.errors import one_line

    reporter = _reporter(args)
    try:
        check_options(args)
        source = case_source(args)
        out = prepare_out(args.out)  # before the model is loaded: an unusable --out fails in a second
        if args.cohort:
            return run_cohort(args, reporter)
        from GliomaMTLLib.io.readers import prefetch_case

        prefetch_case(source)  # the files are read while the model (and PyTorch) loads
        predictor = make_predictor(args, reporter)
        _, written, prediction = predict_one(predictor, source, out, args)
    except Exception as exc:
        if reporter is not None:
            reporter.error(one_line(exc), type=type(exc).__name__)
        raise
    if reporter is not None:
        reporter.done(case_id=prediction.case_id, outputs={k: str(v) for k, v in written.items()},
                      volumes_ml=prediction.volumes_ml, genotype=prediction.calls(), warnings=prediction.warnings)
    else:
        print("\n".join(summary_lines(prediction, written)))
    return 0


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    from GliomaMTLLib.io.atomic import write_text_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _summary_row(name: str, report: dict[str, Any], status: str) -> dict[str, Any]:
    row: dict[str, Any] = {"case": name, "case_id": report.get("case_id", name), "status": status}
    for region in ("WT", "TC", "ET"):
        if region in report.get("volumes_ml", {}):
            row[f"{region}_ml"] = report["volumes_ml"][region]
    for task, entry in report.get("genotype", {}).items():
        if entry.get("available", True) and entry.get("probabilities"):
            row[task] = entry.get("call") or entry.get("predicted")
            row[f"p_{task}"] = round(max(entry["probabilities"].values()), 4)
        else:  # the model card marks the task as not learned: no probability, the reason instead
            row[task] = entry.get("shown") or f"not available ({entry.get('reason')})"
            row[f"p_{task}"] = ""
    row["seconds"] = round(sum(report.get("timings_s", {}).values()), 2)
    row["n_warnings"] = len(report.get("warnings", []))
    row["warnings"] = " | ".join(report.get("warnings", []))
    return row


def run_cohort(args: argparse.Namespace, reporter: Any = None) -> int:
    """Predict every case folder under ``args.cohort`` into ``args.out/<folder>/``."""
    from tqdm import tqdm

    from GliomaMTLLib.inference.report import REPORT_JSON, read_report
    from GliomaMTLLib.io.atomic import write_text_atomic
    from GliomaMTLLib.io.cohort import list_case_folders
    from GliomaMTLLib.metrics import markdown_table

    from GliomaMTLLib.cli.errors import one_line

    out = prepare_out(args.out)
    folders = list_case_folders(args.cohort)
    if not folders:
        raise ValueError(f"no case folders with MR sequence files under {args.cohort}")
    predictor = make_predictor(args)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    counts = {"done": 0, "skipped": 0, "failed": 0}
    bar = tqdm(folders, desc="predict", unit="case", disable=reporter is not None, file=sys.stderr)
    for i, folder in enumerate(bar):
        case_out = out / folder.name
        if reporter is not None:
            reporter.progress(i / len(folders), f"case {folder.name} ({i + 1}/{len(folders)})")
        if (case_out / REPORT_JSON).is_file() and not args.overwrite:
            counts["skipped"] += 1
            rows.append(_summary_row(folder.name, read_report(case_out), "skipped (done before)"))
            continue
        bar.set_postfix_str(folder.name)
        try:
            _, _, prediction = predict_one(predictor, folder, case_out, args)
        except Exception as exc:  # noqa: BLE001 - a bad case must not stop the cohort
            counts["failed"] += 1
            message = one_line(exc)
            errors.append({"case": folder.name, "folder": str(folder), "error": message})
            rows.append({"case": folder.name, "case_id": folder.name, "status": "failed", "error": message})
            _write_csv(out / ERRORS_CSV, errors, ["case", "folder", "error"])
            if reporter is not None:
                reporter.log(f"case {folder.name} failed: {message}", case=folder.name)
            else:
                tqdm.write(f"case {folder.name} failed: {message}", file=sys.stderr)
            continue
        counts["done"] += 1
        rows.append(_summary_row(folder.name, prediction.report(), "done"))
        for warning in prediction.warnings:  # as it goes, not only a count in summary.csv
            if reporter is not None:
                reporter.log(f"case {folder.name}: warning: {warning}", case=folder.name)
            else:
                tqdm.write(f"case {folder.name}: warning: {warning}", file=sys.stderr)
    bar.close()
    if errors:
        _write_csv(out / ERRORS_CSV, errors, ["case", "folder", "error"])
    else:
        (out / ERRORS_CSV).unlink(missing_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    _write_csv(out / SUMMARY_CSV, rows, columns)
    summary = {"cohort": str(args.cohort), "out": str(out), "model": predictor.model_info,
               "counts": counts, "cases": rows, "errors": errors}
    write_text_atomic(out / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    if reporter is not None:
        reporter.done(counts=counts, summary=str(out / SUMMARY_JSON), errors=errors)
    else:
        shown = [c for c in columns if c not in ("error", "warnings")]
        print(markdown_table(rows, shown, floatfmt=".2f"))
        print(f"{counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed"
              + (f"; errors in {out / ERRORS_CSV}" if errors else "") + f"; summary in {out / SUMMARY_JSON}")
    return 1 if errors else 0
