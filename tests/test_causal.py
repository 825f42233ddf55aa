"""Tests for the causal arm: behavioural readouts (readouts.py) and the range / paired-effect analysis
(causal.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from sparseprobe_core import activations, causal, comparison, config, readouts
from sparseprobe_core.readouts import Behaviour, TokenSet


def test_token_set_matches_words_and_prefixes():
    words = TokenSet(("le", "être"))
    assert words.matches(" le") and words.matches(" Le") and words.matches(" être") and words.matches(" Être")
    assert not words.matches("le") and not words.matches(" LE") and not words.matches(" les") and not words.matches(" ")
    quotes = TokenSet(prefixes=("'", '"'))
    assert quotes.matches("'") and quotes.matches('")') and not quotes.matches(" '")
    assert not TokenSet().matches(" le")


class _Tokenizer:
    """A five-token vocabulary, enough for token_ids."""

    vocab = ("<s>", " le", " the", " Le", "'le")
    all_special_ids = (0,)

    def __len__(self):
        return len(self.vocab)

    def batch_decode(self, ids):
        return [self.vocab[i[0]] for i in ids]


def test_token_ids_drop_tokens_in_both_sets_and_special_tokens():
    b = Behaviour(TokenSet(("le",), prefixes=("'", "<")), TokenSet(("the",), prefixes=("'",)), "test")
    ids1, ids0 = readouts.token_ids(_Tokenizer(), b)
    assert ids1.tolist() == [1, 3] and ids0.tolist() == [2]  # "'le" is in both, "<s>" is special
    with pytest.raises(ValueError, match="no token") as err:
        readouts.token_ids(_Tokenizer(), Behaviour(TokenSet(("xyz",)), TokenSet(("the",)), "test"))
    assert "\n" not in str(err.value)


def test_every_behaviour_is_a_shipped_concept_and_declares_why():
    shipped = set(config.make_config(profile="paper").concepts) | set(config.DEV_CONCEPTS)
    assert set(readouts.BEHAVIOURS) <= shipped
    assert {"code_comment", "code_loop_body", "pos_base_form", "sentiment"}.isdisjoint(readouts.BEHAVIOURS)
    for name, b in readouts.BEHAVIOURS.items():
        assert b.why and (b.label_1.words or b.label_1.prefixes) and (b.label_0.words or b.label_0.prefixes), name


def test_behaviour_readout_equals_the_full_logits(bridge):
    """The log-odds from the final norm and the two sets' unembedding rows equal the log-odds of the model's
    own next-token logits over its whole vocabulary, for every declared behaviour; no set is empty."""
    texts = ["Le fichier est", "The file is", "x = 'hello", "print(42", "the cat that", "the dogs"]
    ids = activations.tokenize_last(bridge, texts, 32)
    inputs = activations.left_pad(ids, activations.pad_id(bridge))
    final = activations.RESID_POST.format(layer=bridge.cfg.n_layers - 1)
    resid = activations.run_last_token(bridge, ids, [final])[final]
    with torch.no_grad():
        logits = bridge.original_model(**inputs).logits[:, -1].double()
    for name, behaviour in readouts.BEHAVIOURS.items():
        read = readouts.BehaviourReadout(bridge, behaviour)
        expected = torch.logsumexp(logits[:, read.ids1], 1) - torch.logsumexp(logits[:, read.ids0], 1)
        np.testing.assert_allclose(read(resid), expected.numpy(), atol=1e-4, err_msg=name)
    lang = readouts.BehaviourReadout(bridge, readouts.BEHAVIOURS["french"])(resid[:2])
    assert lang[0] > 0 > lang[1]  # French text expects French function words, English text English ones


def test_probe_readout_is_the_dense_probe(rng):
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] > 0).astype(int)
    read = readouts.ProbeReadout(X, y, seed=0)
    np.testing.assert_allclose(read(X), read.probe.decision_function(X))
    assert set(readouts.for_concept("code_loop_body", None, X, y)) == {"probe"}


def test_effects_are_signed_toward_the_label():
    y = np.array([1, 1, 0, 0])
    clean = np.array([2.0, 1.0, -1.0, -2.0])
    np.testing.assert_array_equal(causal.effects(y, clean, np.zeros(4)), [-2, -1, -1, -2])
    row = causal.range_row(y, clean, np.array([0.5, -0.5, 0.5, -0.5]))
    assert row["clean_auroc"] == 1.0 and row["ablated_auroc"] == 0.5 and row["auroc_drop"] == 0.5
    assert row["effect"] == pytest.approx(-1.5) and row["signal_drop"] == pytest.approx(1.0)
    table = pd.DataFrame([dict(auroc_drop=0.04), dict(auroc_drop=0.06)])
    assert causal.qualifying(table, 0.05).index.tolist() == [1]


def test_auroc_drop_se_is_zero_without_a_drop_and_matches_a_plain_bootstrap(rng):
    from sklearn.metrics import roc_auc_score

    y = np.repeat([0, 1], 40)
    clean = y + rng.normal(size=80)
    assert causal.auroc_drop_se(y, clean, clean.copy()) == 0.0
    whole = 0.5 * clean + rng.normal(size=80)
    se = causal.auroc_drop_se(y, clean, whole, n_boot=2000, seed=1)

    def auroc(s, neg, pos):
        """AUROC by its definition: P(a positive scores above a negative), ties one half (roc_auc_score's value
        in a 20th of its time, which made this loop 14 s)."""
        d = s[pos][:, None] - s[neg][None, :]
        return (d > 0).mean() + 0.5 * (d == 0).mean()

    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    assert auroc(clean, neg, pos) == pytest.approx(roc_auc_score(y, clean), abs=1e-12)
    # the same stratified, paired bootstrap written out plainly, on other draws: close, not equal
    r = np.random.default_rng(7)
    drops = []
    for _ in range(2000):
        bneg, bpos = r.choice(neg, len(neg)), r.choice(pos, len(pos))
        drops.append(auroc(clean, bneg, bpos) - auroc(whole, bneg, bpos))
    assert se == pytest.approx(np.std(drops, ddof=1), rel=0.1) and se > 0.01
    assert causal.range_row(y, clean, whole)["auroc_drop_se"] == causal.auroc_drop_se(y, clean, whole)


def test_min_range_rule_uses_development_cells_below_the_ceiling():
    table = pd.DataFrame(dict(clean_auroc=[1.0, 1.0, 0.9, 0.8, 0.7], auroc_drop_se=[0.0, 0.0, 0.010, 0.016, 0.030]))
    assert causal.min_range_rule(table) == 0.04  # 1.96 x 0.016 = 0.031, rounded up to 0.04
    assert causal.min_range_rule(table, z=1.0) == 0.02
    with pytest.raises(ValueError, match=r"no development cell below AUROC 0\.99"):
        causal.min_range_rule(table[table.clean_auroc == 1.0])
    assert config.make_config(model="smollm2-135m").causal_min_range == config.CAUSAL_MIN_RANGE["smollm2-135m"]
    assert config.make_config(model="some-org/other-model").causal_min_range == config.RunConfig.causal_min_range


def _arm_effects(rng, n=200, advantage=0.3, concepts=("a", "b", "c", "d", "e", "f", "g")):
    """Per-text effects of a toy arm in which `ours` removes `advantage` x the whole layer's effect more than
    `base` and keeps that much more; `same` equals `ours` exactly."""
    rows = []
    y = np.repeat([0, 1], n // 2)
    for c in concepts:
        whole = -1.0 + 0.1 * rng.normal(size=n)
        noise = 0.2 * rng.normal(size=n)
        for method, mode, e in [
            ("ours", "remove", -0.5 + noise - advantage),
            ("base", "remove", -0.5 + noise + 0.05 * rng.normal(size=n)),
            ("same", "remove", -0.5 + noise - advantage),
            ("ours", "keep", -0.5 + noise + advantage),
            ("base", "keep", -0.5 + noise + 0.05 * rng.normal(size=n)),
            ("same", "keep", -0.5 + noise + advantage),
            (causal.WHOLE, "remove", whole),
        ]:
            rows.append(pd.DataFrame(dict(concept=c, layer=3, readout="behaviour", method=method, mode=mode, k=50,
                                          text=np.arange(n), y=y, effect=e, scale=abs(whole.mean()))))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def test_paired_tests_find_a_planted_advantage_in_both_modes(rng):
    eff = _arm_effects(rng)
    out = causal.paired_tests(eff, "ours", ["base", "same", "missing"])
    assert len(out) == 7 * 2 * 2  # concepts x modes x the two present baselines
    vs_base = out[out["baseline"] == "base"]
    assert (vs_base["verdict"] == "better").all() and (vs_base["mean_d"] > 0.2).all()
    assert (vs_base["rank_biserial"] > 0.9).all() and (vs_base["ci_low"] > 0).all()
    vs_same = out[out["baseline"] == "same"]
    assert (vs_same["p"] == 1.0).all() and (vs_same["verdict"] == "no detectable difference").all()
    assert (out["p_holm"] >= out["p"]).all()


def test_a_within_cell_verdict_takes_the_signed_rank_direction_not_the_mean_sign():
    # ours keeps 0.05 more on 180 texts and 2.0 less on 20: the mean says worse, the signed ranks say better
    n, y = 200, np.repeat([0, 1], 100)
    d = np.where(np.arange(n) % 10 == 0, -2.0, 0.05)
    base = np.linspace(-0.9, -0.1, n)
    rows = [pd.DataFrame(dict(concept="a", layer=3, readout="behaviour", method=m, mode="keep", k=50, text=np.arange(n),
                              y=y, effect=e, scale=1.0)) for m, e in [("ours", base + d), ("base", base)]]  # fmt: skip
    out = causal.paired_tests(pd.concat(rows, ignore_index=True), "ours", ["base"]).iloc[0]
    assert out["mean_d"] < 0 < out["rank_biserial"] and out["p_holm"] < 0.05
    assert out["verdict"] == "better" and comparison.signed_rank_direction(d) == 1


def test_concept_areas_feed_the_concept_level_comparison_and_verdict(rng):
    eff = _arm_effects(rng)
    areas = causal.concept_areas(eff)
    assert set(areas.columns) == {"concept", "seed", "method", "eval", "mode", "area"}
    assert causal.WHOLE not in set(areas["method"])
    compared = comparison.compare(areas, "ours", ["base"])
    assert (compared["verdict"] == "better").all() and (compared["n"] == 7).all()
    assert causal.verdict(compared)[0] == "holds"
    worse = comparison.compare(causal.concept_areas(_arm_effects(rng, advantage=-0.3)), "ours", ["base"])
    assert causal.verdict(worse)[0] == "does not hold"
    few = comparison.compare(causal.concept_areas(_arm_effects(rng, concepts=("a", "b", "c"))), "ours", ["base"])
    word, line = causal.verdict(few)
    assert word == "cannot tell" and "cannot reach significance" in line
    assert causal.verdict(compared, readout="probe")[0] == "cannot tell"  # no probe cell qualified


def test_cell_summary_and_headline_read_the_paired_tests(rng):
    out = causal.paired_tests(_arm_effects(rng), "ours", ["base", "same"])
    counts, per_cell = causal.cell_summary(out)
    base = counts.loc[("behaviour", "remove", "base")]
    assert base["cells"] == 7 and base["better"] == 7 and base["worse"] == 0
    assert counts.loc[("behaviour", "keep", "same"), "better"] == 0
    assert per_cell.shape == (7 * 2, 2) and per_cell.iloc[0]["same"].endswith("n.d.")
    line = causal.within_cell_headline(out, "behaviour", "remove")
    assert line.count("better than base") == 7 and "no detectable difference from same" in line
    assert causal.within_cell_headline(out, "probe", "remove") == "none"
