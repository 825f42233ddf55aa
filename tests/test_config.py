"""One place for configuration: every knob is a field of RunConfig, is recorded in the manifest, and
reaches the worker processes (passed as an argument, never read from module state)."""

import dataclasses
import re

import numpy as np
import pytest

from sparseprobe_core import config, parallel, rankers
from sparseprobe_core.config import RankerSettings


def _rank_in_worker(ctx: rankers.RankContext) -> np.ndarray:
    return rankers.rank("sparse_prober_contribution", ctx)


def _ctx(settings: RankerSettings) -> rankers.RankContext:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    A = rng.normal(size=(200, 40))
    A[:, :6] += y[:, None]
    return rankers.RankContext(A, y, rng.normal(size=(40, 8)), np.zeros(8), seed=0, settings=settings)


def test_ranker_settings_reach_worker_processes(monkeypatch):
    monkeypatch.setenv(parallel.ENV_JOBS, "2")
    default, seven = RankerSettings(), RankerSettings(path_n_strengths=7)
    in_process = [_rank_in_worker(_ctx(s)) for s in (default, seven, default)]
    in_workers = parallel.map_units(_rank_in_worker, [(_ctx(s),) for s in (default, seven, default)])
    for here, there in zip(in_process, in_workers):
        np.testing.assert_array_equal(here, there)
    assert not np.array_equal(in_process[0], in_process[1])  # the setting changes the ranking


def test_every_knob_is_recorded():
    cfg = config.make_config(profile="ci", settings={"causal_k": 30, "rankers": {"l1_probe_C": 0.05}})
    record = cfg.record()
    fields = {f.name for f in dataclasses.fields(config.RunConfig)} - {"out_dir"}
    assert set(record) == fields
    assert record["causal_k"] == 30 and record["rankers"]["l1_probe_C"] == 0.05
    assert set(record["rankers"]) == {f.name for f in dataclasses.fields(RankerSettings)}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"k_rmove": 3}, "unknown setting(s) k_rmove"),
        ({"rankers": {"l1_C": 1.0}}, "unknown ranker setting(s) l1_C"),
        ({"layers": "10,15"}, "layers cannot be a setting; pass it to make_config"),
        ({"model": "x", "dtype": "int8"}, "dtype, model cannot be a setting"),
        ({"n_seeds": "3"}, "setting n_seeds='3' has the wrong type; give an int, e.g. n_seeds=2"),
        ({"causal_k": True}, "setting causal_k=True has the wrong type; give an int"),
        ({"rankers": {"l1_probe_C": "x"}}, "setting l1_probe_C='x' has the wrong type; give a float"),
        ({"rankers": 5}, "setting rankers=5 is not a dict"),
        ({"n_strengths": None}, "setting n_strengths=None is not allowed"),
        ({"causal_positions": "middle"}, "setting causal_positions='middle'; use one of: all, last"),
    ],
)
def test_unknown_settings_fail_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.make_config(profile="ci", settings=settings)


def test_setting_values_are_converted_where_the_type_allows():
    cfg = config.make_config(profile="ci", settings={"reach_tol": 0, "k_grid": [1, 2], "n_per_class": None})
    assert (
        cfg.reach_tol == 0.0 and isinstance(cfg.reach_tol, float) and cfg.k_grid == (1, 2) and cfg.n_per_class is None
    )
    with pytest.raises(ValueError, match=r"settings=.* is not a dict"):
        config.make_config(profile="ci", settings=[("causal_k", 3)])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"test_size": 1.5}, "setting test_size=1.5 is out of range: must be in (0, 1), e.g. test_size=0.3"),
        ({"k_grid": [0, 5]}, "setting k_grid=(0, 5) is out of range: every value must be >= 1"),
        ({"judge_Cs": [1.0, "a"]}, "setting judge_Cs=(1.0, 'a') has the wrong type; give numbers"),
        ({"k_grid": [1.5, 2]}, "setting k_grid=(1.5, 2) has the wrong type; give whole numbers"),
        ({"planted_ns": []}, "setting planted_ns=() is empty; give at least one value"),
        ({"c_max_ratio": float("inf")}, "setting c_max_ratio=inf is out of range: must be > 1"),
        ({"n_per_class": 1}, "setting n_per_class=1 is out of range: must be >= 20"),
        ({"rankers": {"elastic_net_l1_ratio": 2}}, "elastic_net_l1_ratio=2 is out of range: must be in [0, 1]"),
        ({"stability_threshold": 0.5}, "stability_threshold=0.5 is out of range: must be in (0.5, 1]"),
        ({"causal_n_texts": 1}, "causal_n_texts=1 is out of range: must be >= 2"),
        ({"verdict_layer_fractions": [0.5, 1.2]}, "every value must be in [0, 1]"),
        ({"test_size": 0.5, "val_size": 0.5}, "test_size=0.5 and val_size=0.5 leave no training rows"),
        ({"causal_n_texts": 201}, "causal_n_texts=201 is odd; the causal texts are drawn half from each class"),
        (
            {"causal_screen_texts": 63},
            "causal_screen_texts=63 is odd; the causal texts are drawn half from each class, "
            "give an even number (e.g. 62)",
        ),
        (
            {"dev_path_grids": [[10, 100.0], [1, 100.0]]},
            "dev_path_grids: 1 in (1, 100.0) is not a valid path_n_strengths (int >= 2)",
        ),
        ({"dev_path_grids": [[10, 0.5]]}, "0.5 in (10, 0.5) is not a valid path_c_max_ratio (float > 1)"),
        ({"dev_path_grids": [10, 100.0]}, "setting dev_path_grids=(10, 100.0) is not a tuple of pairs"),
        ({"dev_path_grids": []}, "setting dev_path_grids=() is empty; give at least one pair"),
        (
            {"causal_n_texts": 32},
            "exceeds causal_n_texts=32 (the range is screened on a subset of the causal texts); "
            "also set causal_screen_texts=32 or less",
        ),
    ],
)
def test_settings_out_of_range_fail_in_one_line(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config.make_config(profile="paper", settings=settings)


def test_valid_pairs_and_an_empty_layer_sweep_are_taken():
    cfg = config.make_config(profile="ci", settings={"dev_path_grids": [[10, 100]], "layer_fractions": []})
    assert cfg.dev_path_grids == ((10, 100.0),) and isinstance(cfg.dev_path_grids[0][1], float)
    assert cfg.layer_fractions == () and cfg.layers_for(4) == [0, 1, 2, 3]  # () means what None means
    cfg = config.make_config(profile="ci", settings={"informative": [["(i)", "keep"]], "layer_fractions": [1, 0]})
    assert cfg.informative == (("(i)", "keep"),) and all(isinstance(f, float) for f in cfg.layer_fractions)


def test_every_numeric_setting_has_a_range_and_the_profiles_lie_in_it():
    kinds = {f.name: str(f.type) for cls in (config.RunConfig, RankerSettings) for f in dataclasses.fields(cls)}
    numeric = {n for n, t in kinds.items() if t.split("|")[0].split("[")[0].strip() in ("int", "float")}
    numeric |= {n for n, t in kinds.items() if t.startswith("tuple[int") or t.startswith("tuple[float")}
    # seed and layers are run parameters, checked by make_config itself; tuples of numeric pairs: PAIR_SETTINGS
    assert numeric - set(config.SETTING_RANGES) == {"seed", "layers"}
    numeric_pairs = {n for n, t in kinds.items() if t.startswith(("tuple[tuple[int", "tuple[tuple[float"))}
    assert numeric_pairs == set(config.PAIR_SETTINGS)
    for profile in config.PROFILES:
        for model in config.CAUSAL_MIN_RANGE:
            cfg = config.make_config(profile=profile, model=model)
            values = {**config.asdict(cfg), **config.asdict(cfg.rankers)}
            for name, interval in config.SETTING_RANGES.items():
                value = values[name]
                assert value is None or all(v in interval for v in (value if isinstance(value, tuple) else [value]))
            assert config.with_settings(cfg, {name: getattr(cfg, name) for name in config.PAIR_SETTINGS}) == cfg


def test_notebook_04_may_add_its_distributed_concept_as_a_setting():
    cfg = config.make_config(profile="ci")
    more = config.with_settings(
        cfg, {"concepts": [*cfg.concepts, "sentiment"], "concept_files": [*cfg.concept_files, "x"]}
    )
    assert more.concepts[-1] == "sentiment" and more.concept_files[-1] == "x"
    assert config.with_settings(cfg, {"causal_k": np.int64(7)}).causal_k == 7  # numpy numbers are numbers
    assert config.make_config(profile="ci", layers=()).layers is None
    assert config.make_config(profile="ci", settings={"layer_fractions": []}).layers_for(30) == list(range(30))


@pytest.mark.parametrize("layers", ["3,3,1", "-1"])
def test_layers_are_distinct_and_not_negative(layers):
    with pytest.raises(ValueError, match="give each layer once, as a number >= 0"):
        config.make_config(profile="ci", layers=layers)


def test_explicit_layers_are_checked_against_the_model():
    cfg = config.make_config(profile="paper", layers="3,40")
    for use in (cfg.layers_for, cfg.selection_layers, cfg.rank_layer, cfg.verdict_layers, cfg.scope_layers):
        with pytest.raises(ValueError, match=r"include \[40\], but smollm2-135m has layers 0..29"):
            use(30)
    assert cfg.layers_for(41) == [3, 40]


def test_layer_rules():
    paper = config.make_config(profile="paper")
    assert paper.layers_for(30) == list(range(30))
    assert paper.probe_sweep_layers(30) == [0, 7, 14, 22, 29]
    assert paper.scope_layers(30) == [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    ci = config.make_config(profile="ci")
    assert ci.layers_for(30) == ci.probe_sweep_layers(30) == ci.scope_layers(30) == [7, 14, 22]
    explicit = config.make_config(profile="paper", layers="3,9")
    assert explicit.scope_layers(30) == explicit.probe_sweep_layers(30) == [3, 9]


def test_a_user_concept_is_named_by_its_file(monkeypatch):
    monkeypatch.delenv("SPARSEPROBE_OUT_DIR")
    cfg = config.make_config(profile="ci", concept="runs/x/my_concept.csv")
    assert cfg.concepts == ("my_concept",) and cfg.concept_files == ("runs/x/my_concept.csv",)
    assert cfg.out_dir.parts[-4:] == ("runs", "my_concept", "figures", "smollm2-135m")


def test_development_and_test_concepts_are_split_once():
    shipped = set(config.shipped_concepts())
    cfg = config.make_config(profile="paper")
    dev, test = set(cfg.development_concepts()), set(cfg.test_concepts())
    assert dev == set(config.DEV_CONCEPTS) <= shipped and len(dev) >= 4
    assert len(test) >= 12 and not dev & test and dev | test == shipped


def test_a_user_concept_is_a_test_concept_whatever_its_name(tmp_path):
    # a user's file named like a development concept is the user's data, not the shipped concept
    mine = config.make_config(
        profile="ci", concept=f"{tmp_path}/dutch.csv,runs/x/my_concept.csv", out_dir=str(tmp_path)
    )
    assert mine.concepts == ("dutch", "my_concept")
    assert mine.development_concepts() == () and mine.test_concepts() == ("dutch", "my_concept")
    shipped = config.make_config(profile="ci", concept="dutch,french", out_dir=str(tmp_path))
    assert shipped.development_concepts() == ("dutch",) and shipped.test_concepts() == ("french",)
    # a file without the .csv suffix is still the user's, and the shipped file given by path is the shipped concept
    (tmp_path / "dutch").write_text("text,label\n")
    other = config.make_config(profile="ci", concept=f"{tmp_path}/dutch,data/concepts/python_number.csv")
    assert other.development_concepts() == ("python_number",) and other.test_concepts() == ("dutch",)
