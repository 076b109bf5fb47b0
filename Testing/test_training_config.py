"""Recipes: parsing, defaults, dotted overrides and their errors (GliomaMTLLib.train.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from GliomaMTLLib.train.config import (
    ConfigError,
    available_recipes,
    load_recipe,
    parse_overrides,
    schedule_plan,
)

PAPER_RECIPES = {"shi2023", "sgpnet", "nuechterlein", "vafaeikia_plgg", "huang_dt"}
SHIPPED_RECIPES = {"gliomamtl_adult", "gliomamtl_pediatric"}
REPO = Path(__file__).resolve().parents[1]


def _shipped_version(name: str) -> str:
    """The version of the bundle shipped in Resources/Models/<name>."""
    import json

    return json.loads((REPO / "Resources" / "Models" / name / "model.json").read_text())["version"]


def test_all_recipes_are_there():
    assert PAPER_RECIPES | SHIPPED_RECIPES <= set(available_recipes())


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES | SHIPPED_RECIPES))
def test_recipe_loads_with_and_without_smoke(name):
    full = load_recipe(name)
    smoke = load_recipe(name, smoke=True)
    assert full["name"] == name
    for recipe in (full, smoke):
        for stage in recipe["stages"].values():
            assert stage["network"]["in_channels"] == len(recipe["sequences"])
            assert set(stage["network"].get("tasks") or {}) <= set(recipe["tasks"])
            for phase in stage["phases"]:
                assert phase["input"]["mode"] in ("patch", "tumor_crop", "whole", "resize")
    # the smoke variant is tiny; the full recipe keeps the paper's values
    assert smoke["data"]["small"] is True and full["data"]["small"] is False
    assert sum(n for *_, n in schedule_plan(smoke)) <= 6
    assert sum(n for *_, n in schedule_plan(full)) >= 500


def test_paper_values_are_kept_in_the_recipes():
    sgp = load_recipe("sgpnet")["stages"]["main"]
    assert sgp["input"] == {**sgp["input"], "mode": "resize", "size": [144, 144, 144]}
    assert sgp["optim"]["lr"] == pytest.approx(1e-4)
    assert sorted(sgp["optim"]["groups"].values()) == pytest.approx([5e-5, 5e-5])
    assert sgp["schedule"]["name"] == "cosine" and sgp["batch_size"] == 2
    plgg = load_recipe("vafaeikia_plgg")
    assert plgg["sequences"] == ["t2f"] and plgg["stages"]["main"]["input"]["size"] == [112, 128, 128]
    assert plgg["stages"]["main"]["batch_size"] == 4
    shi = load_recipe("shi2023")["stages"]["main"]
    assert [p["genotype"] for p in shi["phases"]] == [False, True]
    assert load_recipe("huang_dt")["postprocess"]["et_min_ml"] == pytest.approx(0.5)
    adult = load_recipe("gliomamtl_adult")
    assert list(adult["stages"]) == ["localizer", "main"]
    assert adult["stages"]["localizer"]["network"]["tasks"] == {}
    assert set(adult["tasks"]) == {"idh", "codel_1p19q"}
    assert load_recipe("gliomamtl_pediatric")["sequences"] == ["t2f"]


def test_overrides_set_nested_values_lists_and_floats():
    r = load_recipe("shi2023", ["stages.main.optim.lr=1e-4", "data.n_train=3", "data.small=true",
                                "stages.main.phases.1.input.size=[16,16,16]", "train.iterations=5"])
    assert r["stages"]["main"]["optim"]["lr"] == pytest.approx(1e-4)
    assert r["data"]["n_train"] == 3 and r["data"]["small"] is True
    assert r["stages"]["main"]["phases"][1]["input"]["size"] == [16, 16, 16]
    assert r["stages"]["main"]["phases"][1]["input"]["mode"] == "tumor_crop"  # rest of the phase input kept
    assert [n for *_, n in schedule_plan(r)] == [5, 5]
    # a stage-level input change reaches phases that do not override it
    r = load_recipe("shi2023", ["stages.main.input.size=[48,48,48]"])
    assert all(p["input"]["size"] == [48, 48, 48] for p in r["stages"]["main"]["phases"])


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.iteratons=5", "train.iteratons"),
        ("data.n_trian=4", "data.n_trian"),
        ("stages.main.optim.lrr=0.1", "stages.main.optim.lrr"),
        ("stages.nope.batch_size=2", "stages.nope"),
        ("stages.main.network.featurs=[4,8]", "stages.main.network: NetConfig: unknown key(s) ['featurs']"),
        ("stages.main.preprocess.spacingg=[1,1,1]", "stages.main.preprocess: unknown preprocessing setting(s) ['spacingg']"),
        ("stages.main.phases.0.iteratons=3", "iteratons"),
        ("stages.main.phases.7.iterations=3", "7"),
        ("bogus=1", "bogus"),
    ],
)
def test_unknown_override_key_is_a_clear_error(override, named):
    with pytest.raises(ConfigError) as info:
        load_recipe("shi2023", [override])
    assert named in str(info.value)
    assert "known" in str(info.value) or "NetConfig" in str(info.value) or "index" in str(info.value)


def test_decoding_is_checked_and_reaches_model_json():
    from GliomaMTLLib.train.run_model import bundle_meta

    assert bundle_meta(load_recipe("shi2023"))["decoding"] == {"mode": "argmax"}
    recipe = load_recipe("shi2023", ["decoding.mode=regions", "decoding.tc=0.4", "decoding.et=0.4"])
    assert bundle_meta(recipe)["decoding"] == {"mode": "regions", "wt": 0.5, "tc": 0.4, "et": 0.4}
    with pytest.raises(ConfigError, match=r"decoding threshold et=1.5 must be a number between 0 and 1"):
        load_recipe("shi2023", ["decoding.mode=regions", "decoding.et=1.5"])
    with pytest.raises(ConfigError, match="decoding mode 'vote' is not one of"):
        load_recipe("shi2023", ["decoding.mode=vote"])
    assert bundle_meta(load_recipe("shi2023"))["tta"] is False
    assert bundle_meta(load_recipe("shi2023", ["tta=gpu"]))["tta"] == "gpu"
    for bad in ("tta=sometimes", "tta=1"):  # 1 == True, but model.json must hold a bool
        with pytest.raises(ConfigError, match="tta must be true, false or 'gpu'"):
            load_recipe("shi2023", [bad])


def test_override_type_and_syntax_errors():
    with pytest.raises(ConfigError, match="data.n_train"):
        load_recipe("shi2023", ["data.n_train=many"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["train.iterations"])
    with pytest.raises(ConfigError, match="data.small"):
        load_recipe("shi2023", ["data.small=3"])


def test_unknown_key_in_a_recipe_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nstages:\n  main:\n    network: {in_channels: 4}\n    optimm: {lr: 0.1}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert "stages.main.optimm" in str(info.value) and str(path) in str(info.value)
    path.write_text("name: bad\ntrain: {checkpoint_evry: 3}\nstages: {main: {network: {in_channels: 4}}}\n")
    with pytest.raises(ConfigError, match="train.checkpoint_evry"):
        load_recipe(path)


def test_missing_recipe_lists_available():
    with pytest.raises(ConfigError, match="shi2023"):
        load_recipe("no_such_recipe")


def test_base_inheritance(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: shi2023\nname: child\nstages: {main: {optim: {lr: 2.0e-4}}}\n")
    r = load_recipe(child)
    assert r["name"] == "child"
    assert r["stages"]["main"]["optim"]["lr"] == pytest.approx(2e-4)
    assert r["stages"]["main"]["network"]["head_style"] == "seggated"  # inherited


def test_engine_checks_network_preprocess_and_loss_values():
    with pytest.raises(ConfigError, match=r"stages.main.network: .*head_style"):
        load_recipe("shi2023", ["stages.main.network.head_style=sideways"])
    with pytest.raises(ConfigError, match=r"stages.main.preprocess: .*spacing"):
        load_recipe("shi2023", ["stages.main.preprocess.spacing=[1,-1,1]"])
    with pytest.raises(ConfigError, match=r"stages.main.loss \(phase 0\): .*segg"):
        load_recipe("shi2023", ["stages.main.loss.segg=dice"])
    with pytest.raises(ConfigError, match=r"labels .* do not match"):
        load_recipe("sgpnet", ['labels={"1": a, "2": b}'])


def test_shipped_recipes_of_issue_11():
    """Adult 0.3.0 / pediatric 0.2.0 on generator-2 phantoms, >= 100 held-out adult phantoms,
    every sequence subset of the card trained, and a seg-only baseline of the same architecture."""
    from GliomaMTLLib.train.data import stage_cache_dir

    adult = load_recipe("gliomamtl_adult")
    assert adult["export"]["version"] == "0.3.0" and adult["data"]["n_test"] >= 100
    assert adult["export"]["required_sequences"] == ["t2f"]  # the one sequence every trained subset has
    for stage in adult["stages"].values():
        subsets = {tuple(s) for s in stage["augment"]["sequence_subsets"]}
        assert {("t1c", "t2f"), ("t2w", "t2f"), ("t2f",)} <= subsets
        assert 0 < stage["augment"]["sequence_subset_prob"] < 1  # all four sequences stay the common case
    assert sum(n for *_, n in schedule_plan(adult)) >= 5000
    pediatric = load_recipe("gliomamtl_pediatric")
    assert pediatric["export"]["version"] == "0.2.0"
    candidate = load_recipe("gliomamtl_pediatric_large")  # pediatric 0.3.x, shipped: no BRAF head, 3x phantoms
    assert candidate["tasks"] == {} and candidate["stages"]["main"]["network"]["tasks"] == {}
    assert candidate["data"]["n_train"] == 3 * pediatric["data"]["n_train"]
    assert (candidate["data"]["n_test"], candidate["data"]["seed"]) == (pediatric["data"]["n_test"], pediatric["data"]["seed"])
    same = {k: v for k, v in pediatric["stages"]["main"]["network"].items() if k != "tasks"}
    assert {k: candidate["stages"]["main"]["network"][k] for k in same} == same
    assert [p["genotype"] for p in candidate["stages"]["main"]["phases"]] == [False]
    # the recipe exports the shipped version (0.3.1: flips on a GPU; later versions refit the BRAF path)
    assert candidate["export"]["version"] == _shipped_version("gliomamtl_pediatric") and candidate["tta"] == "gpu"
    reproduce = (REPO / "training" / "reproduce.sh").read_text()
    assert "gliomamtl_pediatric) echo gliomamtl_pediatric_large" in reproduce
    # 0.3.3's BRAF path is fitted on 820 development phantoms and its card measured on 600 test
    # phantoms: reproduce.sh refits and measures on as many
    assert "gliomamtl_pediatric) default_counts=train=720,val=100,test=600,transfer=30,texture_shift=100" in reproduce
    # adult 0.4.4's path is fitted on 820 development phantoms, measured on 600 test and 100 transfer
    assert "gliomamtl_adult) default_counts=train=720,val=100,test=600,transfer=100,texture_shift=100" in reproduce
    assert reproduce.count("--features-of \"Resources/Models/$name\"") == 1  # refit on the shipped path's features
    base = load_recipe("gliomamtl_adult_segonly")  # adult 0.3.1, the network of every later adult recipe
    assert (base["export"]["name"], base["export"]["version"]) == ("gliomamtl_adult", "0.3.1")
    large = load_recipe("gliomamtl_adult_large")  # adult 0.4.x, shipped: 0.3.1 on three times the phantoms
    assert (large["export"]["name"], large["export"]["version"]) == ("gliomamtl_adult", _shipped_version("gliomamtl_adult"))
    assert large["postprocess"]["et_min_confidence"] == 0.7  # since 0.4.1: the unsure-ET rule; 0.3.1 has none
    assert large["tta"] == "gpu" and base["tta"] is None  # since 0.4.2: test-time flips on a GPU
    assert base["postprocess"]["et_min_confidence"] == 0.0
    assert large["stages"]["main"]["network"] == base["stages"]["main"]["network"] and large["tasks"] == {}
    assert large["data"]["n_train"] == 3 * base["data"]["n_train"] == 480
    assert base["tasks"] == {} and base["stages"]["main"]["network"]["tasks"] == {}
    assert base["stages"]["main"]["network"]["features"] == adult["stages"]["main"]["network"]["features"]
    assert [p["genotype"] for p in base["stages"]["main"]["phases"]] == [False]
    same = sum(n for s, _, _, n in schedule_plan(base) if s == "main")
    assert same == sum(n for s, _, _, n in schedule_plan(adult) if s == "main")
    for stage in ("localizer", "main"):  # shares the prepared phantoms
        assert stage_cache_dir(base, stage, "runs/x") == stage_cache_dir(adult, stage, "runs/x")
    assert "gliomamtl_adult) echo gliomamtl_adult_large" in (REPO / "training" / "reproduce.sh").read_text()
    longer = load_recipe("gliomamtl_adult_longer")  # candidate: the shipped weights trained further
    assert longer["export"]["version"] not in ("0.3.1", "0.4.0", "0.4.1", "0.4.2", "0.4.3", "0.4.4")
    assert longer["stages"]["main"]["network"] == base["stages"]["main"]["network"]
    assert {s: longer["stages"][s]["init"] for s in ("localizer", "main")} == {
        "localizer": "Resources/Models/gliomamtl_adult", "main": "Resources/Models/gliomamtl_adult"}
    assert [p["iterations"] for p in longer["stages"]["localizer"]["phases"]] == [0]  # copied unchanged
    # 480 phantoms large never saw: none of its training, validation or test seeds
    offsets = (0, 100_000, 200_000)  # train, val, test (GliomaMTLLib.train.data)
    seeds = {k: {r["data"]["seed"] + o + i for o, n in zip(offsets, ("n_train", "n_val", "n_test"))
                 for i in range(r["data"][n])} for k, r in (("large", large), ("longer", longer))}
    assert len(seeds["longer"]) == len(seeds["large"]) == 480 + 40 + 100
    assert not seeds["longer"] & seeds["large"]
    assert stage_cache_dir(longer, "main", "runs/x") != stage_cache_dir(large, "main", "runs/x")
    for name in ("gliomamtl_adult_batch8", "gliomamtl_adult_gpu"):  # the batch-8 candidates: same network
        candidate = load_recipe(name)
        assert candidate["tasks"] == {} and candidate["stages"]["main"]["batch_size"] == 8
        assert candidate["stages"]["main"]["network"] == base["stages"]["main"]["network"]
        assert candidate["train"]["loader_workers"] == 0  # worker processes only where gpu_train.sh asks
        assert candidate["export"]["version"] not in ("0.3.1", "0.4.0", "0.4.1", "0.4.2", "0.4.3", "0.4.4")  # never a shipped version's name
        for stage in ("localizer", "main"):
            assert stage_cache_dir(candidate, stage, "runs/x") == stage_cache_dir(adult, stage, "runs/x")


def test_phase_augment_overrides_the_stage_and_balance_names_a_task():
    r = load_recipe("gliomamtl_adult", ["stages.main.phases.1.augment.sequence_dropout=0.0",
                                        "stages.main.phases.1.balance=idh"])
    seg, joint = r["stages"]["main"]["phases"]
    assert seg["augment"]["sequence_dropout"] == pytest.approx(0.1)  # the stage's value
    assert joint["augment"]["sequence_dropout"] == 0.0
    assert joint["augment"]["contrast_prob"] == pytest.approx(0.4)  # the rest kept from the stage
    assert (seg["balance"], joint["balance"]) == (None, "idh")
    with pytest.raises(ConfigError, match=r"phases.1.augment.sequence_dropot"):
        load_recipe("gliomamtl_adult", ["stages.main.phases.1.augment.sequence_dropot=0.0"])
    with pytest.raises(ConfigError, match=r"phases.1.balance = 'braf'.*codel_1p19q.*idh"):
        load_recipe("gliomamtl_adult", ["stages.main.phases.1.balance=braf"])
    with pytest.raises(ConfigError, match=r"phases.0.balance = 'idh'.*genotype: true"):
        load_recipe("gliomamtl_adult", ["stages.main.phases.0.balance=idh"])  # a segmentation-only phase
