"""Ablation evaluation of a neuron ranking: keep the top-k (or remove the top-k) neurons of a layer
and measure how well the concept can still be read, in three ways.

(i)   MLP output: recompute m' = a' W_out + b_out and score it with a fixed output-space probe;
(ii)  downstream: run the rest of the model with the ablation hook at the probed position and score
      the final residual stream with a probe trained there on the clean model;
(iii) retrained: fit a fresh probe on the kept neurons only.
The ranking sees only the train split; the evaluation probes are fitted on a separate split
(`fit`), so the contribution-weighted prober's own output probe is never the one that judges it.
Because only the last position is ablated, the downstream run reuses the clean keys/values of the
earlier positions and the clean residual entering the ablated layer (computed once), and pushes one
token per example and setting through the layers from the ablated one on, several settings per pass.

(i) scores m' through the reduction of claim 1: for the linear probe s = w.m + c,
s(a') = sum_i a'_i beta_i + (w.b_out + c) with beta = W_out w. Ablated neurons contribute the
constant fill_i beta_i, so keeping no neuron gives one identical score for every example
(AUROC exactly 0.5) and each evaluation costs O(n d_mlp) instead of O(n d_mlp d_model).
"""

from __future__ import annotations

import copy
import hashlib
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import activations, models

MODES = ("keep", "remove")
FILLS = ("mean", "zero")


def dense_probe(seed: int = 0, C: float = 1.0):
    """The dense L2 logistic probe used as evaluator everywhere (standardised features).

    Solved by liblinear in the dual, which suits n_fit < n_features and was 5-20x faster than lbfgs
    on 160 x 5..1536 (measured); liblinear also penalises the intercept, which shifts every score by
    the same amount and so cannot change an AUROC.
    """
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=C, solver="liblinear", dual=True, max_iter=5000, random_state=seed)
    )


def _linear_form(probe) -> tuple[np.ndarray, float]:
    """(w, c) with probe.decision_function(X) == X @ w + c for a fitted dense_probe pipeline."""
    scaler, lr = probe[0], probe[-1]
    w = lr.coef_[0] / scaler.scale_
    return w, float(lr.intercept_[0] - scaler.mean_ @ w)


def kept_neurons(order: np.ndarray, k: int, mode: str) -> np.ndarray:
    """Boolean mask of surviving neurons: the top-k of `order` (keep) or all but the top-k (remove)."""
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; use one of {MODES}")
    order = np.asarray(order)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= len(order):
        raise ValueError(f"k={k!r} is outside 0..{len(order)}; choose an integer k within the layer's neuron count")
    top = np.zeros(len(order), dtype=bool)
    top[order[:k]] = True
    return top if mode == "keep" else ~top


def fill_values(A_train: np.ndarray, fill: str) -> np.ndarray:
    """Replacement value of an ablated neuron: its train-split mean (mean-ablation) or 0 (zero-ablation)."""
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; use one of {FILLS}")
    A_train = np.asarray(A_train, dtype=np.float64)
    return A_train.mean(axis=0) if fill == "mean" else np.zeros(A_train.shape[1])


def ablate(A: np.ndarray, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """a'_i = a_i if neuron i is kept else fill_i."""
    return np.where(keep[None, :], A, fill[None, :])


def curve_area(ks, values, d_mlp: int) -> float:
    """Normalised area under a metric-vs-k curve on a log k axis (trapezoids): the mean height of the
    curve over log k between the grid's first and last k (k clipped to [1, d_mlp]). A constant curve
    at v has area v; with the grid 1..d_mlp the log axis spans [0, log d_mlp]."""
    x = np.log(np.clip(np.asarray(ks, dtype=float), 1, d_mlp))
    v = np.asarray(values, dtype=float)
    if x.shape != v.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"ks and values must be 1-D of the same length, got {x.shape} and {v.shape}")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"ks must be strictly increasing within 1..{d_mlp}, got {list(ks)}")
    if len(x) == 1:
        return float(v[0])
    return float(np.trapezoid(v, x) / (x[-1] - x[0]))


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval over independent seeds/splits (NaN bounds if < 2)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:  # e.g. no path reached k: nothing to average, and no warning in a claim cell
        return float("nan"), float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


@dataclass(frozen=True, eq=False)  # arrays: compare by identity
class LayerData:
    """One layer's activations on the three splits of one seed (fit = the evaluators' own split)."""

    A_train: np.ndarray
    y_train: np.ndarray
    A_fit: np.ndarray
    y_fit: np.ndarray
    A_test: np.ndarray
    y_test: np.ndarray
    W_out: np.ndarray
    b_out: np.ndarray

    @classmethod
    def from_split(cls, A: np.ndarray, y: np.ndarray, split, W_out: np.ndarray, b_out: np.ndarray) -> LayerData:
        """Cut (A, y) with a concepts.Split: train -> rankers and fills, val -> evaluators, test -> scores."""
        if len(split.val) == 0:
            raise ValueError("the split has no val part for the evaluators; use make_split(..., val_size=0.2)")
        return cls(
            A[split.train],
            y[split.train],
            A[split.val],
            y[split.val],
            A[split.test],
            y[split.test],
            np.asarray(W_out, dtype=np.float64),
            np.asarray(b_out, dtype=np.float64),
        )


def cv_probe(Cs, seed: int = 0, folds: int = 5):
    """``dense_probe`` with its C chosen by stratified `folds`-fold cross-validation (log-loss) over `Cs`
    (``LogisticRegressionCV``): a judge whose regularisation fits the number of rows it is given."""
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    lr = LogisticRegressionCV(
        Cs=list(Cs),
        l1_ratios=(0.0,),
        cv=cv,
        scoring="neg_log_loss",
        solver="liblinear",  # as dense_probe; 2-4x faster than lbfgs on 240 x 576 (measured)
        dual=True,
        max_iter=5000,
        random_state=seed,
        use_legacy_attributes=False,
    )
    return make_pipeline(StandardScaler(), lr)


class OutputEvaluator:
    """(i) AUROC of a fixed output-space probe (the judge), fitted on the clean fit split, on ablated MLP
    outputs. `Cs`: None, the judge is ``dense_probe`` (C = 1); else ``cv_probe(Cs)`` chooses its C."""

    def __init__(self, data: LayerData, seed: int = 0, Cs=None, folds: int = 5):
        self.data = data
        judge = dense_probe(seed) if Cs is None else cv_probe(Cs, seed, folds)
        self.probe = judge.fit(data.A_fit @ data.W_out + data.b_out, data.y_fit)
        w, c = _linear_form(self.probe)
        self.beta = data.W_out @ w  # the probe as a neuron probe (reduction): s = a . beta + b_out . w + c
        self.const = float(data.b_out @ w + c)
        self.A_test = np.asarray(data.A_test, dtype=np.float64)
        y = np.asarray(data.y_train)
        self.delta_a = data.A_train[y == 1].mean(axis=0) - data.A_train[y == 0].mean(axis=0)  # train class shift

    @property
    def clean_auroc(self) -> float:
        """The judge's own held-out AUROC: test AUROC on the clean (unablated) MLP outputs."""
        return float(roc_auc_score(self.data.y_test, self.A_test @ self.beta + self.const))

    def sign_agreement(self, order: np.ndarray, k: int) -> float:
        """Share of the top-k neurons of `order` that the judge reads in the direction they move with the
        concept: beta_i * delta_a_i > 0, beta = W_out w_judge, delta_a_i = E[a_i | 1] - E[a_i | 0] on train.
        A kept neuron read the other way pushes the ablated score against the classes (AUROC < 0.5)."""
        top = np.asarray(order)[:k]
        return float(np.mean(self.beta[top] * self.delta_a[top] > 0))

    def scores(self, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """Probe scores of the ablated test MLP outputs; kept part + one shared constant."""
        const = self.const + float(fill[~keep] @ self.beta[~keep])
        return self.A_test[:, keep] @ self.beta[keep] + const

    def __call__(self, keep: np.ndarray, fill: np.ndarray) -> float:
        """Test AUROC of the probe on the ablated MLP outputs."""
        return float(roc_auc_score(self.data.y_test, self.scores(keep, fill)))


def _retrained_fit(data: LayerData, keep: np.ndarray, seed: int):
    """The (iii) probe refitted on the fit split's kept neurons: (scaler, fitted classifier, rotation Q or
    None); a row's score is ``lr.decision_function(scaler.transform(a[keep]) [@ Q])``."""
    probe = dense_probe(seed)
    scaler, lr = probe[0], probe[-1]
    Z_fit = scaler.fit_transform(data.A_fit[:, keep])
    Q = None
    if Z_fit.shape[1] > Z_fit.shape[0]:
        # not the Gram matrix's eigendecomposition: it is faster but squares the condition number, and it
        # moved one (iii) area in the 4th decimal (measured); the QR keeps every number
        Q, R = np.linalg.qr(Z_fit.T)
        Z_fit = R.T
    lr.fit(Z_fit, data.y_fit)
    return scaler, lr, Q


def _retrained_scores(fitted, A: np.ndarray, keep: np.ndarray) -> np.ndarray:
    scaler, lr, Q = fitted
    Z = scaler.transform(A[:, keep])
    return lr.decision_function(Z if Q is None else Z @ Q)


def retrained_auroc(data: LayerData, keep: np.ndarray, seed: int = 0) -> float:
    """(iii) AUROC on test of a dense_probe refitted on the fit split using only the kept neurons (0.5 if
    none). Ablated neurons are constant, so the fill (mean or zero) does not change this number.

    With more kept neurons than fit rows the fit runs in the row space of the standardised fit rows
    Z = QR^T (Q from a QR of Z^T): liblinear's dual sees the data only through the Gram matrix Z Z^T,
    which the rotation keeps, so it is the same fit (same AUROC, tested) at n x n instead of n x k
    (about 2x faster for remove-top-k, where k is nearly d_mlp)."""
    if not keep.any():
        return 0.5
    fitted = _retrained_fit(data, keep, seed)
    return float(roc_auc_score(data.y_test, _retrained_scores(fitted, data.A_test, keep)))


BELOW_CHANCE_CAUSES = (
    "read against the reference shift",
    "shift flips from reference to test rows",
    "neither (mean shift > 0, AUROC < 0.5)",
)


def _class_shift(score: np.ndarray, y: np.ndarray) -> float:
    return float(score[y == 1].mean() - score[y == 0].mean())


def below_chance_cause(
    data: LayerData, keep: np.ndarray, evaluation: str, judge: OutputEvaluator | None = None, seed: int = 0
) -> str:
    """Why an AUROC with the neurons `keep` kept is below 0.5, measured (one of ``BELOW_CHANCE_CAUSES``).

    Under both evaluations a test row's score is linear in the kept neurons: (i) s = a_K . beta_K + const
    (the judge read as a neuron probe, beta = W_out w), (iii) the probe refitted on the kept neurons
    (`retrained_auroc`). Its AUROC is below 0.5 when the concept's test rows score lower, which for a
    mean is s's class shift on the test rows being negative. Compared with the shift of the same score
    on the rows it was fitted on (the fit split, for both: the judge's and the refitted probe's own rows):

    - "read against the reference shift": the shift is <= 0 already on the fit rows: the score weighs
      the kept neurons against how they move there (only (i)'s judge, fitted with every neuron, can: a
      multivariate weight need not share the sign of a neuron's own shift);
    - "shift flips from reference to test rows": > 0 on the fit rows, <= 0 on the test rows (the kept
      neurons' class signal does not hold out: noise, or too few rows);
    - "neither ...": > 0 on both (the AUROC and the mean shift disagree, e.g. a skewed score).

    For (i) at k = 1: the sign of beta_i times the neuron's class shift on the fit rows, then on the test rows."""
    if not keep.any():
        raise ValueError("no neuron is kept; a cause is defined for keep-top-k with k >= 1")
    if evaluation == "(i)":
        if judge is None:
            raise ValueError("evaluation (i) needs its judge (OutputEvaluator)")
        beta = judge.beta[keep]
        ref = _class_shift(data.A_fit[:, keep] @ beta, data.y_fit)
        test = _class_shift(data.A_test[:, keep] @ beta, data.y_test)
    elif evaluation == "(iii)":
        fitted = _retrained_fit(data, keep, seed)
        ref = _class_shift(_retrained_scores(fitted, data.A_fit, keep), data.y_fit)
        test = _class_shift(_retrained_scores(fitted, data.A_test, keep), data.y_test)
    else:
        raise ValueError(f"evaluation {evaluation!r}; pass '(i)' or '(iii)'")
    return BELOW_CHANCE_CAUSES[0] if ref <= 0 else BELOW_CHANCE_CAUSES[1] if test <= 0 else BELOW_CHANCE_CAUSES[2]


@contextmanager
def torch_threads(n: int | None):
    """Run torch ops on `n` threads (None: leave the setting), restoring the old value after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# per decoder, the layers at which the shortcut was checked against the full pass, and the verdict
_SHORTCUT_OK: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, bool]] = weakref.WeakKeyDictionary()
# config fields that the decoder's forward reads by a layer's position in `layers` (Gemma 3's
# layer_types picks each layer's attention mask, sliding or full, and its RoPE)
_PER_LAYER_CONFIG = ("layer_types",)


@contextmanager
def decoder_layers_from(decoder, start: int):
    """Run only the decoder's layers from `start` on: cut its `layers` ModuleList, and every per-layer
    config list it indexes by position in that list (`_PER_LAYER_CONFIG`), restoring both after.

    Each layer keeps its own index, hence its KV-cache slot and its own sliding window; only the
    forward's loop, which looks up the mask and rotary embedding of layer i as layer_types[i], sees
    the cut list. Cutting `layers` alone ran Gemma 3's layers with the types of the first ones (the
    shortcut then matched the full pass only at layers that are multiples of 6)."""
    layers, config = decoder.layers, decoder.config
    saved = {
        name: getattr(config, name)
        for name in _PER_LAYER_CONFIG
        if isinstance(getattr(config, name, None), (list, tuple)) and len(getattr(config, name)) == len(layers)
    }
    try:
        decoder.layers = torch.nn.ModuleList(list(layers)[start:])
        for name, value in saved.items():
            setattr(config, name, value[start:])
        yield
    finally:
        decoder.layers = layers
        for name, value in saved.items():
            setattr(config, name, value)


class DownstreamRunner:
    """(ii) Final-layer residual at the probed token with the layer's neurons ablated at that token only.

    The HF decoder wrapped by the bridge (no LM head: only the residual is read) runs each batch of
    clean texts once, keeping the keys/values of the prefix (all but the last token) and the residual
    entering the ablated layer at the last token. An ablation changes nothing below that layer, so each
    setting then runs only the last token, and only through the layers from the ablated one on: the
    decoder's layer list is cut there (`decoder_layers_from`) and the clean residual goes in as
    `inputs_embeds`. That shortcut assumes the decoder adds nothing to `inputs_embeds` before its first
    layer: true of SmolLM2 (Llama) and of Gemma 3 (in transformers 5.23 the sqrt(d_model) scaling is
    inside its embedding module, not in the decoder's forward), not of GPT-2 (position embeddings).
    It is checked against the full pass once per decoder and layer, on the first runner's clean run,
    and if it fails every layer runs (`self.start == 0`).

    `cache_as`: the model's name, to keep the clean prefix state of each batch in the activation cache
    (keyed by model, texts and layer; only the layers a setting runs are stored); None: no cache.

    `threads`: torch threads for these forwards; None (default) keeps torch's setting. On the idle
    2-core reference machine two threads ran the notebook's (ii) loop 1.6x faster than one; while
    another process kept the cores busy they were 2-3x slower (measured), so pass threads=1 there.
    """

    def __init__(
        self,
        bridge,
        token_ids: list[list[int]],
        layer: int,
        batch_size: int = 16,
        threads: int | None = None,
        cache_as: str | None = None,
    ):
        if min(len(x) for x in token_ids) < 2:
            raise ValueError("every text needs at least 2 tokens (a prefix and the probed token) for the KV-reuse run")
        if not 0 <= layer < bridge.cfg.n_layers:
            raise ValueError(f"layer {layer} is out of range 0..{bridge.cfg.n_layers - 1}")
        self.bridge, self.layer, self.n, self.threads = bridge, layer, len(token_ids), threads
        # the decoder stack without the LM head: only the final residual is read, never the logits
        self.decoder = bridge.original_model.base_model
        window = getattr(self.decoder.config, "sliding_window", None)
        if (
            window
            and "sliding_attention" in (getattr(self.decoder.config, "layer_types", None) or ())
            and max(len(x) for x in token_ids) >= window
        ):
            # a sliding-window cache that is full cannot drop the last token (Cache.crop refuses)
            raise ValueError(
                f"texts of up to {window - 1} tokens only on this model (sliding window {window}); "
                f"tokenize with max_tokens <= {window - 1}"
            )
        self.read = activations.RESID_POST.format(layer=bridge.cfg.n_layers - 1)
        self.write = activations.HIDDEN.format(layer=layer)
        # batches of texts of similar length waste little compute on padding; outputs are put back in input order
        by_length = np.argsort([len(x) for x in token_ids], kind="stable")
        self.restore = np.argsort(by_length)
        texts = [
            [token_ids[i] for i in by_length[start : start + batch_size]]
            for start in range(0, len(token_ids), batch_size)
        ]
        device = models.input_device(bridge)
        inputs = [
            {k: v.to(device) for k, v in activations.left_pad(t, activations.pad_id(bridge)).items()} for t in texts
        ]
        fresh = {}
        verdicts = _SHORTCUT_OK.setdefault(self.decoder, {})
        if layer and layer not in verdicts:
            fresh[0] = self._clean_pass(inputs[0])
            verdicts[layer] = hasattr(self.decoder, "layers") and self._shortcut_matches(inputs[0], *fresh[0])
        self.start = layer if layer and verdicts[layer] else 0
        self.batches = [
            (x, *(fresh[i] if i in fresh else self._prefix_state(x, t, cache_as)))
            for i, (x, t) in enumerate(zip(inputs, texts))
        ]

    def _clean_pass(self, inputs) -> tuple:
        """One batch's clean run: the prefix keys/values (every layer) and the residual entering
        `self.layer` at the last token."""
        entry: list[torch.Tensor] = []
        hook = (activations.RESID_PRE.format(layer=self.layer), lambda x, hook: entry.append(x[:, -1:].clone()))
        with torch.no_grad(), torch_threads(self.threads), self.bridge.hooks(fwd_hooks=[hook]):
            cache = self.decoder(**inputs, use_cache=True).past_key_values
        cache.crop(-1)  # the clean prefix only; each setting appends (and drops) its own last token
        return cache, entry[0]

    def _prefix_state(self, inputs, texts: list[list[int]], cache_as: str | None) -> tuple:
        """`_clean_pass`, read from / written to the activation cache when settings skip the lower layers.

        Only layers from `self.start` on are stored; the layers below are never run for a setting, so
        they get zero keys/values of the right shape (the decoder sizes its attention mask by them)."""
        from transformers import DynamicCache  # here, not at the top: worker processes never need transformers

        if not (cache_as and self.start):
            return self._clean_pass(inputs)
        path = activations.cache_path(models.cache_tag(self.bridge, cache_as), texts, f"prefix-kv-from-{self.start}")
        stored = activations.read_arrays(path)
        if stored is None:
            cache, entry = self._clean_pass(inputs)
            upper = list(cache)[self.start :]
            activations.write_arrays(
                path,
                keys=np.stack([models.to_numpy(k) for k, _, _ in upper]),
                values=np.stack([models.to_numpy(v) for _, v, _ in upper]),
                entry=models.to_numpy(entry),
            )
            return cache, entry
        like = {"device": models.input_device(self.bridge), "dtype": self.bridge.cfg.dtype}
        keys, values = torch.from_numpy(stored["keys"]).to(**like), torch.from_numpy(stored["values"]).to(**like)
        below = [(torch.zeros_like(keys[0]), torch.zeros_like(values[0]))] * self.start
        # the config gives each layer its cache type (sliding-window layers on Gemma 3), as in the clean pass
        return (
            DynamicCache(ddp_cache_data=below + list(zip(keys, values)), config=self.decoder.config),
            torch.from_numpy(stored["entry"]).to(**like),
        )

    def _shortcut_matches(self, inputs, cache, entry) -> bool:
        """Does the clean run from `self.layer` on give the full pass's final residual (one batch)?"""
        clean = (np.ones((1, self.bridge.cfg.d_mlp), dtype=bool), np.zeros(self.bridge.cfg.d_mlp))
        short, full = (self._final_resid_batch(inputs, cache, entry, *clean, start) for start in (self.layer, 0))
        return bool(np.allclose(short, full, rtol=0, atol=1e-4 * np.abs(full).max()))

    def _hooks(self, keep: np.ndarray, fill: np.ndarray, out: list):
        """Hooks that ablate the probed token (keep: (d_mlp,), or (rows, d_mlp) one mask per batch row)
        and record the final residual there."""
        keep_t = torch.as_tensor(np.asarray(keep, dtype=bool))
        fill_t = torch.as_tensor(np.asarray(fill), dtype=torch.float32)

        def ablate_last(x, hook):
            x = x.clone()
            x[:, -1] = torch.where(keep_t.to(x.device), x[:, -1], fill_t.to(x.device, x.dtype))
            return x

        def read_last(x, hook):
            out.append(models.to_numpy(x[:, -1]).copy())

        return [(self.write, ablate_last), (self.read, read_last)]

    def _final_resid_batch(self, inputs, cache, entry, group: np.ndarray, fill: np.ndarray, start: int) -> np.ndarray:
        """(rows, masks, d_model) final residual of one batch's last tokens under each mask of `group`,
        running the decoder's layers from `start` on (from the embedding when start == 0)."""
        n_rows, S = inputs["input_ids"].shape[0], len(group)
        repeated = copy.deepcopy(cache)
        repeated.batch_repeat_interleave(S)  # row i * S + j: text i under mask j
        feed = (
            dict(input_ids=inputs["input_ids"][:, -1:].repeat_interleave(S, dim=0))
            if start == 0
            else dict(inputs_embeds=entry.repeat_interleave(S, dim=0))
        )
        out: list[np.ndarray] = []
        hooks = self._hooks(np.tile(group, (n_rows, 1)), fill, out)
        resid = self._run_layers(
            hooks,
            out,
            start,
            **feed,
            attention_mask=inputs["attention_mask"].repeat_interleave(S, dim=0),
            position_ids=inputs["position_ids"][:, -1:].repeat_interleave(S, dim=0),
            past_key_values=repeated,
            use_cache=True,
        )
        return resid.reshape(n_rows, S, -1)

    def _run_layers(self, hooks: list, out: list, start: int, **inputs) -> np.ndarray:
        """Run the decoder's layers from `start` on under `hooks` (whose read hook appends to `out`) and
        return what the read hook recorded, which must be exactly one array."""
        with (
            torch.no_grad(),
            torch_threads(self.threads),
            self.bridge.hooks(fwd_hooks=hooks),
            decoder_layers_from(self.decoder, start),
        ):
            self.decoder(**inputs)
        if len(out) != 1:
            raise RuntimeError(
                f"the read hook {self.read} fired {len(out)} times for one batch; "
                "the bridge's hooks did not run inside the HF model"
            )
        return out[0]

    def final_resid(self, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """(n, d_model) final residual at the probed token, prefix keys/values reused from the clean run."""
        return self.final_resid_many([keep], fill)[0]

    def final_resid_many(self, keeps: list[np.ndarray], fill: np.ndarray, chunk: int = 16) -> list[np.ndarray]:
        """`final_resid` for several keep masks (one fill), `chunk` masks per forward pass.

        Each text's clean prefix cache is repeated once per mask (`Cache.batch_repeat_interleave` on a
        copy), so one pass pushes chunk x n probed tokens: big matrix products instead of one small,
        overhead-bound pass per mask (1.9x less time per mask on the 2-core reference machine,
        benchmarks/bench_ablation.py: 32 texts, 18 masks, identical AUROC).
        """
        per_mask: list[list[np.ndarray]] = [[] for _ in keeps]
        for first in range(0, len(keeps), chunk):
            group = np.stack([np.asarray(k, dtype=bool) for k in keeps[first : first + chunk]])
            for batch in self.batches:
                resid = self._final_resid_batch(*batch, group, fill, self.start)
                for j in range(len(group)):
                    per_mask[first + j].append(resid[:, j])
        return [np.concatenate(parts)[self.restore] for parts in per_mask]

    def final_resid_naive(self, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """The same quantity by re-running every full sequence through every layer, without the KV
        cache or the layer cut (the reference for tests and benchmarks); the decoder without its LM
        head, as the bridge's own forward would compute logits that nothing reads."""
        out: list[np.ndarray] = []
        hooks = self._hooks(keep, fill, out)
        with torch.no_grad(), torch_threads(self.threads), self.bridge.hooks(fwd_hooks=hooks):
            for inputs, _, _ in self.batches:
                self.decoder(**inputs, use_cache=False)
        return np.concatenate(out)[self.restore]


class DownstreamEvaluator:
    """(ii) AUROC of a final-residual probe (fitted on the clean fit split) under ablation of `layer`."""

    def __init__(
        self, runner: DownstreamRunner, resid_fit: np.ndarray, y_fit: np.ndarray, y_test: np.ndarray, seed: int = 0
    ):
        if len(y_test) != runner.n:
            raise ValueError(f"y_test has {len(y_test)} labels but the runner holds {runner.n} test texts")
        self.runner, self.y_test = runner, np.asarray(y_test)
        self.probe = dense_probe(seed).fit(resid_fit, y_fit)

    def __call__(self, keep: np.ndarray, fill: np.ndarray) -> float:
        """Test AUROC of the final-residual probe with the layer ablated by one mask."""
        return self.many([keep], fill)[0]

    def many(self, keeps: list[np.ndarray], fill: np.ndarray) -> list[float]:
        """AUROC under each keep mask (one fill); the masks share forward passes (`final_resid_many`)."""
        resid = self.runner.final_resid_many(keeps, fill)
        return [float(roc_auc_score(self.y_test, self.probe.decision_function(r))) for r in resid]


class Memo:
    """Wrap an `evaluate(keep, fill)` so a mask seen before (e.g. keep-all, shared by every method,
    or two methods with the same top-k) is scored once."""

    def __init__(self, evaluate):
        self.evaluate, self.cache, self.calls = evaluate, {}, 0

    def __call__(self, keep: np.ndarray, fill: np.ndarray) -> float:
        """The wrapped evaluation of this mask and fill, computed on first sight only."""
        key = (np.packbits(keep).tobytes(), np.asarray(fill, dtype=np.float64).tobytes())
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.evaluate(keep, fill)
        return self.cache[key]


def evaluate_masks(evaluate_many, masks: dict, fill: np.ndarray) -> dict:
    """{name: score} for named keep masks: each distinct mask scored once, all in one
    ``evaluate_many(list_of_masks, fill)`` call (e.g. DownstreamEvaluator.many, which batches them)."""
    distinct: dict[bytes, np.ndarray] = {}
    for keep in masks.values():
        distinct.setdefault(np.packbits(keep).tobytes(), keep)
    scores = dict(zip(distinct, evaluate_many(list(distinct.values()), fill)))
    return {name: scores[np.packbits(keep).tobytes()] for name, keep in masks.items()}


def ablation_curve(order: np.ndarray, ks, mode: str, fill: np.ndarray, evaluate) -> np.ndarray:
    """AUROC for each k of the grid: `evaluate(keep_mask, fill)` after keeping/removing the top-k of `order`."""
    return np.array([evaluate(kept_neurons(order, int(k), mode), fill) for k in ks])


def downstream_texts(test: np.ndarray, y: np.ndarray, token_ids: list[list[int]], n: int, seed: int) -> np.ndarray:
    """The test rows run downstream: a seeded, class-balanced subsample of `test` (n // 2 per class, fewer
    if a class has fewer), sorted, of texts with at least 2 tokens (a prefix and the probed token,
    which the KV-reuse run of `DownstreamRunner` needs)."""
    rng = np.random.default_rng(seed)
    test = np.asarray(test)
    usable = test[[len(token_ids[i]) >= 2 for i in test]]
    return np.sort(np.concatenate([rng.permutation(usable[y[usable] == v])[: n // 2] for v in (0, 1)]))


# -- the causal arm: the layer ablated at every position of the text ---------------------------------------

POSITIONS = ("last", "all")


def text_positions(inputs: dict[str, torch.Tensor], bos: bool) -> torch.Tensor:
    """(rows, width) True at the positions of each left-padded row that hold the text's own tokens: not a
    pad and, when the model prepends one (`bos`), not the BOS token. BOS is no token of the text, and on
    both embedded models it is the attention sink whose state every later position reads; ablating it
    with last-token means would measure a broken sink, not the concept."""
    real = inputs["attention_mask"].bool()
    return real & (inputs["position_ids"] > 0) if bos else real


class AllPositionsRunner(DownstreamRunner):
    """(ii) with the layer's neurons ablated at every position of the text (`text_positions`), the final
    residual read at the probed (last) token, where the concept is built rather than only where it is read.

    Every position changes, so no key or value can be reused; what is reused is the clean residual
    entering `layer` at every position, from one clean pass per batch that stops there (the layers from
    `layer` on are never run clean). Each setting then runs the whole sequence through the layers from
    `layer` on only (`decoder_layers_from`, checked against the full pass once per decoder and layer as
    for `DownstreamRunner`), several settings per pass (each text's rows repeated once per mask).
    The fill is the same vector at every position (the train split's last-token means, as for the
    probed-token runner). `cache_as` is not used: `ablated_final_resid` caches the readouts instead,
    which a warm run needs without any clean pass."""

    def __init__(self, bridge, token_ids: list[list[int]], layer: int, batch_size: int = 16, threads=None):
        self.bos = bool(bridge.cfg.default_prepend_bos and bridge.tokenizer.bos_token_id is not None)
        super().__init__(bridge, token_ids, layer, batch_size=batch_size, threads=threads, cache_as=None)

    def _clean_pass(self, inputs) -> tuple:
        """The residual entering `self.layer` at every position of one batch (no keys/values: none is reused);
        the pass stops there."""
        entry: list[torch.Tensor] = []

        def record(x, hook):
            entry.append(x.clone())
            raise activations.StopForward

        hook = (activations.RESID_PRE.format(layer=self.layer), record)
        try:
            with torch.no_grad(), torch_threads(self.threads), self.bridge.hooks(fwd_hooks=[hook]):
                self.decoder(**inputs, use_cache=False)
        except activations.StopForward:
            pass
        return None, entry[0]

    def _prefix_state(self, inputs, texts, cache_as) -> tuple:
        return self._clean_pass(inputs)

    def _all_hooks(self, keep: np.ndarray, fill: np.ndarray, where: torch.Tensor, out: list):
        """Hooks that ablate every position of `where` ((rows, width) bool) with one keep mask per row
        ((rows, d_mlp), or (d_mlp,) for all rows), and record the final residual at the last position."""
        keep_t = torch.as_tensor(np.asarray(keep, dtype=bool))
        keep_t = keep_t.expand(where.shape[0], -1) if keep_t.ndim == 1 else keep_t
        fill_t = torch.as_tensor(np.asarray(fill), dtype=torch.float32)
        kept = keep_t[:, None, :] | ~where[:, :, None]  # (rows, width, d_mlp): True where the clean value stays

        def ablate_all(x, hook):
            return torch.where(kept, x, fill_t.to(x.dtype))

        def read_last(x, hook):
            out.append(x[:, -1].detach().float().numpy().copy())

        return [(self.write, ablate_all), (self.read, read_last)]

    def _final_resid_batch(self, inputs, cache, entry, group: np.ndarray, fill: np.ndarray, start: int) -> np.ndarray:
        """(rows, masks, d_model) final residual of one batch's last tokens under each mask of `group`, the
        whole sequences run through the decoder's layers from `start` on (from the embedding if 0)."""
        n_rows, S = inputs["input_ids"].shape[0], len(group)
        rep = {name: value.repeat_interleave(S, dim=0) for name, value in inputs.items()}  # row i*S+j: text i, mask j
        feed = dict(input_ids=rep["input_ids"]) if start == 0 else dict(inputs_embeds=entry.repeat_interleave(S, dim=0))
        out: list[np.ndarray] = []
        hooks = self._all_hooks(np.tile(group, (n_rows, 1)), fill, text_positions(rep, self.bos), out)
        resid = self._run_layers(
            hooks,
            out,
            start,
            **feed,
            attention_mask=rep["attention_mask"],
            position_ids=rep["position_ids"],
            use_cache=False,
        )
        return resid.reshape(n_rows, S, -1)

    def final_resid_naive(self, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """The same quantity by re-running every full sequence through every layer with the ablation hook
        (the reference for tests and benchmarks), one mask per pass."""
        out: list[np.ndarray] = []
        with torch.no_grad(), torch_threads(self.threads):
            for inputs, _, _ in self.batches:
                with self.bridge.hooks(fwd_hooks=self._all_hooks(keep, fill, text_positions(inputs, self.bos), out)):
                    self.decoder(**inputs, use_cache=False)
        return np.concatenate(out)[self.restore]


RUNNERS = {"last": DownstreamRunner, "all": AllPositionsRunner}


def ablated_cache_path(model_name: str, token_ids: list[list[int]], layer: int, keep, fill, positions: str):
    """Cache entry of the final residual at the probed token with `layer` ablated by one (keep, fill) at
    `positions`: keyed by the model, the token ids, and (in the name) the layer, the position mode and a
    digest of the exact mask and fill bytes, so any other mask or fill misses."""
    digest = hashlib.sha256(
        np.packbits(np.asarray(keep, dtype=bool)).tobytes() + np.asarray(fill, dtype=np.float64).tobytes()
    ).hexdigest()[:24]
    return activations.cache_path(model_name, token_ids, f"ablated-{positions}-L{layer}-{len(keep)}-{digest}")


def ablated_final_resid(
    bridge,
    token_ids: list[list[int]],
    layer: int,
    keeps: list[np.ndarray],
    fill: np.ndarray,
    *,
    positions: str = "all",
    cache_as: str | None = None,
    batch_size: int = 16,
    chunk: int = 8,
    threads: int | None = None,
) -> list[np.ndarray]:
    """(n, d_model) final residual (before the final norm) at each text's probed token with `layer`'s
    neurons ablated (kept where `keep`, else `fill`) at the probed token only ("last", `DownstreamRunner`)
    or at every position of the text ("all", `AllPositionsRunner`), one array per keep mask.

    `cache_as`: the model's name, to read and write each setting in the activation cache
    (`ablated_cache_path`); only the settings that miss are run, by one runner built on the first miss,
    so a warm rerun runs no forward pass at all. None: no cache."""
    if positions not in RUNNERS:
        raise ValueError(f"unknown positions {positions!r}; use one of {POSITIONS}")
    paths_ = [ablated_cache_path(cache_as, token_ids, layer, k, fill, positions) for k in keeps] if cache_as else None
    found: list[np.ndarray | None] = [None] * len(keeps)
    if paths_:
        for i, path in enumerate(paths_):
            stored = activations.read_arrays(path)
            if stored is not None and stored.get("resid", np.empty(0)).shape == (len(token_ids), bridge.cfg.d_model):
                found[i] = stored["resid"]
    missing = [i for i, r in enumerate(found) if r is None]
    if missing:
        runner = RUNNERS[positions](bridge, token_ids, layer, batch_size=batch_size, threads=threads)
        fresh = runner.final_resid_many([keeps[i] for i in missing], fill, chunk=chunk)
        for i, resid in zip(missing, fresh):
            found[i] = resid
            if paths_:
                activations.write_arrays(paths_[i], resid=resid)
    return found
