"""Training machinery end to end on tiny synthetic phantoms and tiny networks.

Every recipe runs its ``smoke`` variant (small 3 mm phantoms, a few thousand parameters, one
iteration per phase); resume, prepare caching, evaluation and export are checked on those runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from GliomaMTLLib.train.config import available_recipes, load_recipe, schedule_plan
from GliomaMTLLib.train.data import load_dataset, prepare
from GliomaMTLLib.train.trainer import RunExistsError, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One prepared-array cache for the whole session (recipes with equal preprocessing share it)."""
    return tmp_path_factory.mktemp("prepared")


def smoke(name: str, cache: Path, *overrides: str) -> dict:
    return load_recipe(name, [f"data.cache_dir={cache}", *overrides], smoke=True)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def stage_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {p.stem: load_file(str(p)) for p in sorted((run / "weights").glob("*.safetensors"))}


# ------------------------------------------------------------------------------------------
# every recipe builds its networks and losses and trains briefly
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(available_recipes()))
def test_recipe_trains_on_small_synthetic_data(name, cache_dir, tmp_path):
    recipe = smoke(name, cache_dir, "train.iterations=1")
    info = train(recipe, tmp_path / name, quiet=True)
    assert info["status"] == "finished"
    plan = schedule_plan(recipe)
    assert info["iterations"] == sum(n for *_, n in plan) == len(plan)
    entries = read_log(tmp_path / name)
    # a warm-started stage (stages.<stage>.init, e.g. gliomamtl_adult_longer) logs what it copied
    inits = {e["stage"]: e for e in entries if e.get("event") == "init"}
    assert set(inits) == {s for s, conf in recipe["stages"].items() if conf["init"]}
    assert all(e["copied"] > 0 for e in inits.values())
    log = [e for e in entries if "iteration" in e]
    assert [e["iteration"] for e in log] == list(range(1, len(plan) + 1))
    assert [(e["stage"], e["phase"]) for e in log] == [(s, p) for s, _, p, _ in plan]
    for entry in log:
        assert math.isfinite(entry["loss"]) and entry["parts"] and entry["lr"]
    weights = stage_weights(tmp_path / name)
    assert set(weights) == set(recipe["stages"])
    run_json = json.loads((tmp_path / name / "run.json").read_text())
    assert run_json["status"] == "finished" and run_json["hardware"]["device"] == "cpu"


def test_run_folder_is_not_silently_reused(cache_dir, tmp_path):
    recipe = smoke("huang_dt", cache_dir, "train.iterations=1")
    train(recipe, tmp_path / "run", quiet=True)
    with pytest.raises(RunExistsError, match="--resume"):
        train(recipe, tmp_path / "run", quiet=True)


# ------------------------------------------------------------------------------------------
# resume: 6 iterations straight == 2 + stop + resume
# ------------------------------------------------------------------------------------------

RESUME_SETTINGS = (
    "train.iterations=3",  # two phases (seg pre-training, joint) x 3 = 6 iterations
    "train.checkpoint_every=1",
    "stages.main.network.dropout=0.3",  # torch RNG in the forward pass
    "stages.main.augment.intensity_prob=0.5",
    "stages.main.augment.noise_prob=0.5",
    "stages.main.augment.sequence_dropout=0.2",
)


@pytest.fixture(scope="module")
def straight_run(cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    info = train(smoke("shi2023", cache_dir, *RESUME_SETTINGS), run, quiet=True)
    assert info["status"] == "finished" and info["iterations"] == 6
    return run


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = stage_weights(a), stage_weights(b)
    assert set(wa) == set(wb)
    for stage in wa:
        assert set(wa[stage]) == set(wb[stage])
        for key in wa[stage]:
            assert torch.equal(wa[stage][key], wb[stage][key]), f"{stage}.{key} differs"


@pytest.mark.parametrize("stop_after", [2, 3, 4])  # inside phase 1, at the phase boundary, inside phase 2
def test_resume_gives_identical_weights(straight_run, cache_dir, tmp_path, stop_after):
    run = tmp_path / "run"
    info = train(smoke("shi2023", cache_dir, *RESUME_SETTINGS, f"train.stop_after={stop_after}"), run, quiet=True)
    assert info["status"] == "stopped" and info["iterations"] == stop_after
    assert not (run / "weights" / "main.safetensors").exists()
    info = train(smoke("shi2023", cache_dir, *RESUME_SETTINGS), run, resume=True, quiet=True)
    assert info["status"] == "finished" and info["iterations"] == 6
    assert_same_weights(straight_run, run)
    straight_losses = [e["loss"] for e in read_log(straight_run)]
    assert [e["loss"] for e in read_log(run)] == straight_losses


def test_resume_refuses_a_different_recipe(straight_run, cache_dir, tmp_path):
    run = tmp_path / "run"
    train(smoke("shi2023", cache_dir, *RESUME_SETTINGS, "train.stop_after=1"), run, quiet=True)
    with pytest.raises(ValueError, match="stages.main.optim.lr"):
        train(smoke("shi2023", cache_dir, *RESUME_SETTINGS, "stages.main.optim.lr=0.5"), run, resume=True, quiet=True)


def test_killed_process_resumes_to_the_same_weights(straight_run, cache_dir, tmp_path):
    """A real SIGKILL in the middle of training, then ``--resume`` (the atomic checkpoint survives)."""
    run = tmp_path / "run"
    sets = [f"data.cache_dir={cache_dir}", *RESUME_SETTINGS]
    cmd = [sys.executable, "-m", "GliomaMTLLib.train.train", "--config", "shi2023", "--smoke", "--quiet",
           "--out", str(run), "--set", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = run / "train_log.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()[-2000:]
    subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    assert_same_weights(straight_run, run)


# ------------------------------------------------------------------------------------------
# prepare: cached arrays, reused on a rerun, rebuilt when the preprocessing changes
# ------------------------------------------------------------------------------------------


def test_prepare_writes_and_reuses_the_cache(tmp_path):
    recipe = load_recipe("gliomamtl_adult", [f"data.cache_dir={tmp_path / 'cache'}"], smoke=True)
    first = prepare(recipe)
    n_cases = sum(recipe["data"][f"n_{s}"] for s in ("train", "val", "test"))
    assert first.built == n_cases and first.reused == 0
    for stage, folder in first.folders.items():
        dataset = json.loads((folder / "dataset.json").read_text())
        assert dataset["stage"] == stage and len(dataset["cases"]) == n_cases
        case = dataset["cases"][0]
        assert {"case_id", "shape", "spacing", "geometry", "genotype", "survival_days", "event"} <= set(case)
        image = np.load(folder / f"{case['case_id']}_image.npy")
        assert image.shape == (4, *case["shape"]) and image.dtype == np.float32
        assert np.load(folder / f"{case['case_id']}_label.npy").shape == tuple(case["shape"])
    loc = json.loads((first.folders["localizer"] / "dataset.json").read_text())["cases"][0]
    assert loc["spacing"] == pytest.approx([6.0, 6.0, 6.0])
    stamps = {p: p.stat().st_mtime_ns for f in first.folders.values() for p in f.glob("*.npy")}
    second = prepare(recipe)
    assert second.built == 0 and second.reused == n_cases and second.folders == first.folders
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    changed = load_recipe("gliomamtl_adult", [f"data.cache_dir={tmp_path / 'cache'}",
                                              "stages.localizer.preprocess.spacing=[5.0,5.0,5.0]"], smoke=True)
    third = prepare(changed)
    assert third.folders["main"] == first.folders["main"]
    assert third.folders["localizer"] != first.folders["localizer"]
    assert third.built == n_cases  # for the new localizer folder; the main arrays are kept
    assert {p: p.stat().st_mtime_ns for p in stamps if first.folders["main"] in p.parents} == {
        p: t for p, t in stamps.items() if first.folders["main"] in p.parents}
    # more cases of the same data: only the new ones are built
    more = load_recipe("gliomamtl_adult", [f"data.cache_dir={tmp_path / 'cache'}", "data.n_train=4"], smoke=True)
    fourth = prepare(more)
    assert fourth.folders == first.folders and fourth.built == 1 and fourth.reused == n_cases


def test_label_availability_masks_only_training_cases(cache_dir):
    recipe = smoke("nuechterlein", cache_dir, "data.genotype_fraction=0.5", "data.expert_label_fraction=0.5")
    folder = prepare(recipe).folders["main"]
    train_cases = load_dataset(recipe, folder, ("train",))
    assert sum(all(v == -1 for v in c.genotype.values()) for c in train_cases) == 2
    weak = [c for c in train_cases if c.label is None]
    assert len(weak) == 2 and all(c.weak_label is not None and set(np.unique(c.weak_label)) <= {0, 1} for c in weak)
    test_cases = load_dataset(recipe, folder, ("test",))
    assert all(c.label is not None and min(c.genotype.values()) >= 0 for c in test_cases)


# ------------------------------------------------------------------------------------------
# evaluate and export a trained (smoke) cascade
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adult_run(cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("adult") / "run"
    train(smoke("gliomamtl_adult", cache_dir, "train.iterations=2"), run, quiet=True)
    return run


def test_evaluate_writes_the_papers_tables(adult_run, tmp_path):
    from GliomaMTLLib.train.evaluate import evaluate_run

    out = tmp_path / "eval"
    metrics = evaluate_run(adult_run, out)
    for name in ("report.md", "segmentation.csv", "segmentation_cases.csv", "classification.csv",
                 "survival.csv", "metrics.json", "roc.png"):
        assert (out / name).is_file(), name
    with open(out / "segmentation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"stage", "region", "n", "dice_mean", "hd95_median", "sensitivity_mean", "specificity_mean"} <= set(rows[0])
    # scored on the input grid of each case, through the Predictor: the cascade's result, no stage on its own
    assert [(r["stage"], r["region"]) for r in rows] == [("main", "WT"), ("main", "TC"), ("main", "ET")]
    assert metrics["info"]["inference"] == "GliomaMTLLib.inference.Predictor"
    for row in rows:
        for key in ("dice_mean", "sensitivity_mean", "specificity_mean"):
            if row[key] not in ("", "nan"):
                assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["hd95_median"]) >= 0.0
    with open(out / "classification.csv") as handle:
        cls = list(csv.DictReader(handle))
    assert [r["task"] for r in cls] == ["idh", "codel_1p19q"]
    assert {"auc", "accuracy", "sensitivity", "specificity"} <= set(cls[0])
    for row in cls:
        for key in ("auc", "accuracy", "sensitivity", "specificity"):
            if row[key] not in ("", "nan"):
                assert 0.0 <= float(row[key]) <= 1.0
    report = (out / "report.md").read_text()
    assert "## Segmentation" in report and "## Genotype" in report and "| Dice |" in report
    assert metrics["info"]["cases"] == 2
    assert json.loads((out / "metrics.json").read_text())["genotype"].keys() == {"idh", "codel_1p19q"}


def test_export_writes_a_loadable_bundle_that_reproduces_the_run(adult_run, tmp_path):
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.train.evaluate import load_run
    from GliomaMTLLib.train.export import export_run

    folder = export_run(adult_run, tmp_path / "gliomamtl_adult_test")
    bundle = load_bundle(folder)
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        n: 0o666 & ~umask for n in ("model.safetensors", "model.json", "card.md")}
    meta = bundle.meta
    assert list(meta["stages"]) == ["localizer", "main"]
    assert meta["stages"]["localizer"]["input_size"] == [32, 32, 32]
    assert meta["stages"]["main"]["crop_size"] == [32, 32, 32]
    # two validation cases are far too few to fit a temperature: T stays 1 and the bundle says why
    assert meta["calibration"] == {"idh": 1.0, "codel_1p19q": 1.0}
    for task in ("idh", "codel_1p19q"):
        fit = meta["calibration_fit"][task]
        assert fit["fitted"] is False and fit["known_cases"] == 2 and "calibration_min_cases = 30" in fit["why"]
    assert meta["training"]["recipe"] == "gliomamtl_adult" and meta["training"]["iterations"] == 6
    assert meta["metrics"]["segmentation"]["main/WT"]["n"] == 2
    card = (folder / "card.md").read_text()
    assert "synthetic data only" in card and "not for clinical use" in card.lower() and "main/WT" in card
    assert "`idh`: temperature left at 1 (not fitted: 2 known validation labels" in card
    # the bundle's networks are the run's networks
    _, run = load_run(adult_run)
    run_nets, nets = run.build_networks(), bundle.build_networks()
    # recipe export.required_sequences: [t2f] (trained with sequence subsets): the rest optional
    assert meta["required_sequences"] == ["t2f"] and meta["optional_sequences"] == ["t1n", "t1c", "t2w"]
    x = torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for stage, net in run_nets.items():
            a, b = net(x), nets[stage](x)
            assert torch.equal(a["seg"], b["seg"])
            for task in a["genotype"]:
                assert torch.equal(a["genotype"][task], b["genotype"][task])


def test_exported_bundle_runs_in_the_predictor_and_evaluates(adult_run, tmp_path):
    from GliomaMTLLib.train.evaluate import evaluate_bundle
    from GliomaMTLLib.train.export import export_run

    folder = export_run(adult_run, tmp_path / "bundle", evaluate=False)
    metrics = evaluate_bundle(folder, "synth:adult:n=1:seed=42:small", tmp_path / "eval")
    assert metrics["info"]["inference"] == "GliomaMTLLib.inference.Predictor"
    assert set(metrics["genotype"]) == {"idh", "codel_1p19q"}
    assert "main/WT" in metrics["segmentation"]


def test_train_command_line_and_progress_events(cache_dir, tmp_path, capsys):
    from GliomaMTLLib.progress import parse_event
    from GliomaMTLLib.train.train import main

    run = tmp_path / "cli"
    assert main(["--config", "huang_dt", "--smoke", "--out", str(run), "--progress-json",
                 "--set", f"data.cache_dir={cache_dir}", "train.iterations=2"]) == 0
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    assert [e["event"] for e in events if e["event"] == "progress"] == ["progress", "progress"]
    assert events[-1]["event"] == "done" and events[-1]["status"] == "finished"
    assert (run / "weights" / "main.safetensors").is_file()


# ------------------------------------------------------------------------------------------
# real-data path: a BraTS-style folder + clinical CSV (+ BraTS 2020 name_mapping.csv)
# ------------------------------------------------------------------------------------------


def test_folder_cases_join_clinical_rows_through_the_id_map(tmp_path):
    from GliomaMTLLib.train.data import list_case_specs

    root = tmp_path / "brats"
    for i in (1, 2, 3):
        case = root / f"BraTS20_Training_00{i}"
        case.mkdir(parents=True)
        (case / f"BraTS20_Training_00{i}_flair.nii.gz").write_bytes(b"")
    (tmp_path / "name_mapping.csv").write_text(
        "Grade,BraTS_2019_subject_ID,TCGA_TCIA_subject_ID,BraTS_2020_subject_ID\n"
        "HGG,x,TCGA-02-0006,BraTS20_Training_001\nLGG,y,TCGA-DU-5870,BraTS20_Training_002\nHGG,z,,BraTS20_Training_003\n")
    (tmp_path / "clinical.csv").write_text(
        "case_id,IDH status,1p/19q,survival_days,event\n"
        "TCGA-02-0006,WT,non-codeleted,300,1\nTCGA-DU-5870,Mutant,codeleted,2000,0\nBraTS20_Training_003,NA,,,\n")
    recipe = load_recipe("shi2023", [
        "data.source=folder", f"data.root={root}", f"data.clinical_csv={tmp_path / 'clinical.csv'}",
        f"data.id_map.csv={tmp_path / 'name_mapping.csv'}", "data.split.test=0.34", "data.split.val=0.0"])
    specs = {s.case_id: s for s in list_case_specs(recipe)}
    assert set(specs) == {"BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003"}
    assert specs["BraTS20_Training_001"].clinical["idh"] == "wildtype"
    assert specs["BraTS20_Training_002"].clinical["codel_1p19q"] == "codeleted"
    assert specs["BraTS20_Training_002"].clinical["survival_days"] == 2000
    assert specs["BraTS20_Training_003"].clinical["idh"] is None
    assert sorted(s.split for s in specs.values()) == ["test", "train", "train"]


def test_gliomamtl_synth_folder_trains_evaluates_and_the_cli_wires_it(tmp_path, capsys):
    from GliomaMTLLib.cli import main as cli
    from GliomaMTLLib.train.export import export_run

    cohort = tmp_path / "cohort"
    assert cli(["synth", "--out", str(cohort), "--n", "4", "--cohort", "pediatric", "--small", "--no-preview",
                "--seed", "3"]) == 0
    run = tmp_path / "run"
    assert cli(["train", "--config", "gliomamtl_pediatric", "--smoke", "--quiet", "--out", str(run), "--set",
                "data.source=folder", f"data.root={cohort}", f"data.cache_dir={tmp_path / 'cache'}",
                "data.split.test=0.25", "data.split.val=0.25", "train.iterations=1"]) == 0
    recipe = load_recipe(run / "recipe.yaml")
    assert recipe["data"]["source"] == "folder"
    cases = load_dataset(recipe, prepare(recipe, run).folders["main"], ("train", "val", "test"))
    assert len(cases) == 4 and {c.split for c in cases} == {"train", "val", "test"}
    assert all(c.genotype["braf"] >= 0 for c in cases)  # from the cohort's labels.csv
    capsys.readouterr()
    assert cli(["evaluate", "--run", str(run), "--out", str(tmp_path / "eval")]) == 0
    assert "## Segmentation" in capsys.readouterr().out
    bundle = export_run(run, tmp_path / "bundle", evaluate=False)
    assert cli(["evaluate", "--model", str(bundle), "--data", str(cohort), "--out", str(tmp_path / "eval2")]) == 0
    metrics = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    assert metrics["info"]["cases"] == 4 and set(metrics["genotype"]) == {"braf"}
    assert set(metrics["segmentation"]) == {"main/WT"}  # a whole-tumor model is scored on WT only


def test_calibration_is_fitted_once_there_are_enough_validation_labels(adult_run):
    from GliomaMTLLib.train.evaluate import load_run, run_predictor
    from GliomaMTLLib.train.export import fit_calibration

    recipe, run = load_run(adult_run)
    recipe["export"]["calibration_min_cases"] = 2
    temps, fit = fit_calibration(recipe, run_predictor(run))
    assert set(temps) == {"idh", "codel_1p19q"}
    for task in temps:
        assert fit[task]["fitted"] is True and fit[task]["known_cases"] == 2
        assert 0.05 <= temps[task] <= 20.0


# ------------------------------------------------------------------------------------------
# warm start (stages.<stage>.init)
# ------------------------------------------------------------------------------------------


def test_init_from_a_run_copies_its_weights(adult_run, cache_dir, tmp_path):
    run = tmp_path / "warm"
    recipe = smoke("gliomamtl_adult", cache_dir, "train.iterations=0",
                   f"stages.localizer.init={adult_run}", f"stages.main.init={adult_run}")
    train(recipe, run, quiet=True)
    assert_same_weights(adult_run, run)
    init_events = [e for e in read_log(run) if e.get("event") == "init"]
    assert [e["stage"] for e in init_events] == ["localizer", "main"] and all(e["fresh"] == [] for e in init_events)


def test_init_keeps_fresh_tensors_where_the_architecture_changed(adult_run, tmp_path):
    from GliomaMTLLib.nets import build_network
    from GliomaMTLLib.train.checkpoint import load_init_weights, warm_start
    from GliomaMTLLib.train.evaluate import load_run

    recipe, _ = load_run(adult_run)
    trained = recipe["stages"]["main"]["network"]
    conf = dict(trained, seg_summary=not trained.get("seg_summary", False))  # heads one input wider or narrower
    net = build_network(conf)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    source = load_init_weights(adult_run, "main")
    copied, fresh = warm_start(net, source)
    assert fresh == ["classifiers.bodies.codel_1p19q.1.weight", "classifiers.bodies.idh.1.weight"]
    assert torch.equal(net.state_dict()["classifiers.bodies.idh.1.weight"], before["classifiers.bodies.idh.1.weight"])
    for name in copied:
        assert torch.equal(net.state_dict()[name], source[name])


def test_init_reads_bundles_and_names_bad_sources(adult_run, tmp_path):
    from GliomaMTLLib.train.checkpoint import load_init_weights, weights_path
    from GliomaMTLLib.train.export import export_run

    bundle = export_run(adult_run, tmp_path / "bundle", evaluate=False)
    from_bundle = load_init_weights(bundle, "localizer")
    from_file = load_init_weights(weights_path(adult_run, "localizer"), "localizer")
    assert from_bundle.keys() == from_file.keys()
    assert all(torch.equal(from_bundle[k], from_file[k]) for k in from_file)
    with pytest.raises(FileNotFoundError, match="no tensors of stage 'decoder'"):
        load_init_weights(bundle, "decoder")
    with pytest.raises(FileNotFoundError, match=r"stages.main.init = '.*nowhere'"):
        load_init_weights(tmp_path / "nowhere", "main")


# ------------------------------------------------------------------------------------------
# training/gpu_train.sh: the GPU script, exercised on the CPU
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_script_refuses_a_machine_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "training/gpu_train.sh", "gliomamtl_adult_gpu", str(tmp_path / "run")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "torch sees no CUDA device" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_gpu_script_trains_with_worker_processes_and_exports_a_bundle(tmp_path):
    run = tmp_path / "run"
    extra = " ".join(["data.small=true", "data.n_train=2", "data.n_val=0", "data.n_test=0", f"data.cache_dir={tmp_path / 'cache'}",
                      "stages.localizer.preprocess.spacing=[6.0,6.0,6.0]", "stages.localizer.network.features=[4,8,16]",
                      "stages.localizer.input.size=[32,32,32]", "stages.main.preprocess.spacing=null",
                      "stages.main.network.features=[4,8,16]", "stages.main.network.gate_features=[4,8]",
                      "stages.main.input.size=[32,32,32]",
                      "stages.main.batch_size=2", "train.iterations=2", "train.num_threads=1"])
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "EXTRA": extra}
    proc = subprocess.run(["bash", "training/gpu_train.sh", "gliomamtl_adult_gpu", str(run)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["iterations"] == 4
    recipe = load_recipe(str(run / "recipe.yaml"), [])
    assert recipe["train"]["loader_workers"] >= 1 and recipe["data"]["workers"] >= 1
    meta = json.loads((run / "bundle" / "model.json").read_text())
    assert meta["name"] == "gliomamtl_adult" and set(meta["stages"]) == {"localizer", "main"}
    assert not meta["metrics"]["segmentation"]  # exported without evaluation
