"""The ranking comparison's statistics: the concept is the unit, Holm over the family, honest power."""

import numpy as np
import pandas as pd
import pytest

from sparseprobe_core import comparison


def _areas(effect: float, n_concepts: int = 14, n_seeds: int = 3, seed: int = 0, mode: str = "keep") -> pd.DataFrame:
    """Areas of "ours" and two baselines: "weak" is worse than ours by `effect`, "equal" the same on average."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_concepts):
        base = rng.uniform(0.6, 0.9)
        for s in range(n_seeds):
            noise = rng.normal(0, 0.01, 3)
            rows += [
                dict(concept=f"c{c}", seed=s, method="ours", eval="(i)", mode=mode, area=base + noise[0]),
                dict(concept=f"c{c}", seed=s, method="weak", eval="(i)", mode=mode, area=base - effect + noise[1]),
                dict(concept=f"c{c}", seed=s, method="equal", eval="(i)", mode=mode, area=base + noise[2]),
            ]
    return pd.DataFrame(rows)


def test_a_real_difference_is_found_and_a_null_one_is_not():
    res = comparison.compare(_areas(0.05), "ours", ["weak", "equal"]).set_index("baseline")
    assert res.loc["weak", "verdict"] == "better" and res.loc["weak", "better_on"] == 14
    weak = res.loc["weak"]
    assert weak["ci_low"] < weak["mean"] < weak["ci_high"] and abs(weak["mean"] - 0.05) < 0.01
    assert res.loc["equal", "verdict"] == "no detectable difference"
    assert res.loc["weak", "p_holm"] >= res.loc["weak", "p"]  # Holm never lowers a p-value


def test_remove_mode_flips_the_sign_so_positive_means_better():
    res = comparison.compare(_areas(-0.05, mode="remove"), "ours", ["weak"]).iloc[0]
    # in remove mode lower area is better: "weak" has the higher area, so ours is better
    assert res["verdict"] == "better" and res["mean"] == pytest.approx(0.05, abs=0.01)


def test_seeds_are_averaged_within_a_concept():
    areas = _areas(0.05, n_concepts=5, n_seeds=4)
    d = comparison.concept_differences(areas, "ours", "weak", "keep")
    assert len(d) == 5  # one number per concept, not per (concept, seed)
    # with 5 concepts the exact test cannot go below 2/32 = 0.0625, whatever the effect
    assert comparison.compare(areas, "ours", ["weak"]).iloc[0]["p"] == pytest.approx(comparison.smallest_p(5))
    assert comparison.smallest_p(5) > comparison.ALPHA


def test_minimum_detectable_effect_shrinks_with_more_concepts():
    small, large = (comparison.minimum_detectable_effect(n, sd=0.02, alpha=0.05 / 6) for n in (12, 48))
    assert 0 < large < small
    assert small == pytest.approx(0.02 * 1.19 / np.sqrt(3 / np.pi), rel=0.1)  # d ~ 1.19 for n=12, alpha 0.0083


def test_the_verdict_takes_the_side_of_the_signed_ranks_not_of_the_mean():
    """Thirteen concepts slightly worse and one far better: the mean is positive, the test says worse."""
    d = np.r_[np.linspace(-0.02, -0.01, 13), 0.5]
    assert d.mean() > 0 and comparison.signed_rank_direction(d) == -1
    rows = [
        dict(concept=f"c{c}", seed=0, method=m, eval="(i)", mode="keep", area=0.7 + (v if m == "ours" else 0.0))
        for c, v in enumerate(d)
        for m in ("ours", "base")
    ]
    res = comparison.compare(pd.DataFrame(rows), "ours", ["base"]).iloc[0]
    assert res["p_holm"] < comparison.ALPHA and res["mean"] > 0
    assert res["verdict"] == "worse"
    assert comparison.signed_rank_direction(np.zeros(3)) == 0


def test_holm_over_layers_is_one_family_and_only_ever_stricter():
    per_layer = {
        L: comparison.compare(_areas(effect, seed=L), "ours", ["weak", "equal"])
        for L, effect in [(3, 0.05), (7, 0.0015)]
    }
    both = comparison.holm_over(per_layer)
    assert len(both) == 4 and set(both["part"]) == {3, 7} and "mde" not in both
    for L, fam in per_layer.items():
        mine = both[both["part"] == L].set_index("baseline")
        own = fam.set_index("baseline")
        assert (mine["p_holm"] >= own["p_holm"] - 1e-12).all()  # a bigger family never adjusts less
        np.testing.assert_array_equal(mine["p"], own["p"])
    # the clear difference survives the larger family; the marginal one, significant within its own layer,
    # does not survive the family of both layers; a verdict never changes direction
    verdicts = both.set_index(["part", "baseline"])["verdict"]
    assert verdicts[3, "weak"] == "better"
    assert per_layer[7].set_index("baseline").loc["weak", "verdict"] == "better"
    assert verdicts[7, "weak"] == "no detectable difference"
    assert set(both["verdict"]) <= {"better", "no detectable difference"}
    with pytest.raises(ValueError, match="no families"):
        comparison.holm_over({})


def test_rank_biserial_is_the_signed_rank_balance():
    assert comparison.rank_biserial(np.array([1.0, 2.0, 3.0])) == 1.0
    assert comparison.rank_biserial(np.array([0.0, 0.0])) == 0.0
    # ranks of |d|: 1 -> 1, -2 -> 2, 3 -> 3 (zero dropped): (4 - 2) / 6
    assert comparison.rank_biserial(np.array([1.0, -2.0, 3.0, 0.0])) == pytest.approx(1 / 3)
    assert comparison.signed_rank_direction(np.array([-5.0, 1.0])) == -1


def test_needed_concepts_is_the_first_n_that_can_pass_holms_first_level():
    for m in (1, 18, 153):
        n = comparison.needed_concepts(m)
        assert comparison.smallest_p(n) < 0.05 / m <= comparison.smallest_p(n - 1)
    assert comparison.needed_concepts(1) == 6  # 2 / 2^6 = 0.031


def _family(verdicts: dict[str, str], parts=(None,)) -> pd.DataFrame:
    rows = [dict(baseline=b, evaluation="(i)", mode="keep", verdict=v, **({"part": p} if p is not None else {}))
            for p in parts for b, v in verdicts.items()]  # fmt: skip
    return pd.DataFrame(rows)


def test_decide_applies_the_claims_rule():
    assert comparison.decide(_family({"a": "better", "b": "better"}), ["a", "b"], ["a", "b", "c"]) == "holds"
    assert comparison.decide(_family({"a": "better", "b": "no detectable difference"}), ["a", "b"], ["a"]) == (
        "cannot tell"
    )
    assert comparison.decide(_family({"a": "better", "c": "worse"}), ["a"], ["a", "c"]) == "does not hold"
    assert comparison.decide(_family({"a": "better", "c": "worse"}), ["a"], ["a"]) == "holds"  # c need not be beaten
    two_layers = pd.concat(
        [_family({"a": "better"}, parts=(3,)), _family({"a": "no detectable difference"}, parts=(7,))]
    )
    assert comparison.decide(two_layers, ["a"], ["a"]) == "cannot tell"  # must beat it in every part
    with pytest.raises(ValueError, match="vacuously"):
        comparison.decide(_family({"a": "better"}), [], ["a"])
    with pytest.raises(ValueError, match="vacuously"):
        comparison.decide(_family({"a": "better"}).iloc[:0], ["a"], ["a"])


def test_identical_rankings_are_grouped_once():
    areas = _areas(0.05).assign(layer=3)
    twin = areas[areas["method"] == "weak"].assign(method="weak_twin")
    groups = comparison.identical_rankings(pd.concat([areas, twin]), ["weak", "equal", "weak_twin", "absent"])
    assert groups == [["weak", "weak_twin"], ["equal"]]


def test_region_differences_split_the_k_grid_at_each_units_entered_count():
    rows = []
    for c in range(6):
        for k in (1, 2, 5, 10, 20):
            # ours is 0.1 better up to k = 5 (the entered region of every unit) and 0.1 worse beyond
            ours = 0.8 + (0.1 if k <= 5 else -0.1)
            rows += [dict(concept=f"c{c}", layer=3, seed=0, method=m, eval="(i)", mode="keep", k=k, auroc=a)
                     for m, a in (("ours", ours), ("base", 0.8))]  # fmt: skip
    entered = pd.DataFrame(dict(concept=[f"c{c}" for c in range(6)], layer=3, seed=0, entered=5))
    out = comparison.region_differences(pd.DataFrame(rows), entered, "ours", ["base"]).set_index("region")
    assert out.loc["entered", "mean"] == pytest.approx(0.1) and out.loc["fallback", "mean"] == pytest.approx(-0.1)
    assert (out["n"] == 6).all()


def test_variant_areas_score_each_setting_of_one_choice_and_nothing_else():
    rows = []
    for c in ("a", "b"):
        for method, keep, remove in [
            ("ours", 0.80, 0.40),
            ("ours [g1]", 0.90, 0.50),
            ("ours [g2]", 0.70, 0.30),
            ("ours [lda]", 0.99, 0.01),
            ("ours_coefw", 0.99, 0.01),
            ("other", 0.99, 0.01),
        ]:
            rows += [
                dict(concept=c, method=method, eval="(i)", mode="keep", area=keep),
                dict(concept=c, method=method, eval="(i)", mode="remove", area=remove),
            ]
    areas = pd.DataFrame(rows)
    assert comparison.variant_name("ours", "g1") == "ours [g1]"
    names = pd.Series(["ours", comparison.variant_name("ours", "g1"), "f_stat"])
    assert comparison.is_variant(names).tolist() == [False, True, False]
    table = comparison.variant_areas(areas, "ours", "g0", ["g0", "g1", "g2"], [("(i)", "keep"), ("(i)", "remove")])
    # rows: the settings of this choice only (not another choice's variant, not a method sharing the prefix)
    assert list(table.index) == ["g0", "g1", "g2"]
    assert table.loc["g0", "(i) keep"] == pytest.approx(0.80) and table.loc["g1", "(i) remove"] == pytest.approx(0.50)
    # keep: higher is better; remove: lower is better; g1 is best kept and worst removed
    assert list(table["mean rank"]) == [2.0, 2.0, 2.0]
    assert table["(i) remove"].rank().tolist() == [2.0, 3.0, 1.0]
    short = comparison.frozen_shortfall(table, "g0")
    assert list(short["best"]) == ["g1", "g2"] and list(short["short"]) == pytest.approx([0.10, 0.10])
    with pytest.raises(ValueError, match="frozen setting"):
        comparison.variant_areas(areas, "ours", "g0", ["g1"], [("(i)", "keep")])
