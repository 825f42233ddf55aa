"""Activations at the probed (last) token, collected with TransformerLens hooks and cached on disk.

Texts are left-padded, so the last position of every row is its probed token and never a pad;
position ids restart at each row's first real token, so absolute-position models (GPT-2) see the
same positions as in an unbatched run. The forward pass runs the HF decoder without its LM head
and stops after the deepest requested layer, so no logits are computed (on Gemma 3, with its
262k-token vocabulary, logits for 32 x 128 tokens alone take 4.3 GB).

Which tensor is "the MLP output": the reduction m = a W_out + b_out holds for the MLP's own output,
`blocks.L.mlp.hook_out` (`MLP_OUT`). On pre-norm blocks (Llama, SmolLM2, GPT-2) that is also what the
block adds to the residual stream. Gemma 2/3 blocks normalise it first (`post_feedforward_layernorm`)
and add (1 + g) m / rms(m); TransformerLens calls that `blocks.L.hook_mlp_out` (`MLP_POST_NORM`).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import paths, progress

HIDDEN = "blocks.{layer}.mlp.hook_post"
MLP_OUT = "blocks.{layer}.mlp.hook_out"  # m = a W_out + b_out, before any norm of the block
MLP_POST_NORM = "blocks.{layer}.hook_mlp_out"  # what the block adds to the residual for its MLP
RESID_POST = "blocks.{layer}.hook_resid_post"
RESID_PRE = "blocks.{layer}.hook_resid_pre"
POSITION_RULE = "last-token"
_LAYER = re.compile(r"^blocks\.(\d+)\.")


def tokenize_last(bridge, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each text (BOS first when the model expects one), keeping the last `max_tokens`."""
    tok = bridge.tokenizer
    bos = [tok.bos_token_id] if bridge.cfg.default_prepend_bos and tok.bos_token_id is not None else []
    ids = [bos + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    too_long = sum(len(x) > max_tokens for x in ids)
    if too_long:
        warnings.warn(
            f"{too_long} text(s) exceed {max_tokens} tokens; "
            f"kept their last {max_tokens} tokens so the probed token stays",
            stacklevel=2,
        )
    return [x[-max_tokens:] for x in ids]


def left_pad(batch: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input ids, attention mask and position ids for one batch."""
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, x in enumerate(batch):
        ids[row, width - len(x) :] = torch.tensor(x)
        mask[row, width - len(x) :] = 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def hook_layer(name: str) -> int:
    """The block index a hook name belongs to."""
    match = _LAYER.match(name)
    if match is None:
        raise ValueError(f"hook {name!r} is not a per-block hook (blocks.L.*); use e.g. {HIDDEN.format(layer=0)}")
    return int(match.group(1))


def _pad_id(bridge) -> int:
    tok = bridge.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


class _Stop(Exception):
    """Raised by a hook once every requested activation of a batch is recorded."""


def run_last_token(bridge, token_ids: list[list[int]], hooks: list[str], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Activations of `hooks` at each sequence's last token, shape (n, dim) per hook, float32.

    Runs the HF decoder wrapped by the bridge (`original_model.base_model`, no LM head) with the
    bridge's hooks, and stops at the end of the deepest requested block: neither the later layers
    nor the logits are computed, even when the last block's residual is requested (the bridge's
    `stop_at_layer` cannot stop there and would compute logits over the whole vocabulary)."""
    stop = max(hook_layer(h) for h in hooks) + 1
    decoder = bridge.original_model.base_model
    order = np.argsort([len(x) for x in token_ids], kind="stable")
    out: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    batch_out: dict[str, list[np.ndarray]] = {}

    def record(x, hook, name):
        batch_out.setdefault(name, []).append(x[:, -1].float().numpy().copy())

    def stop_here(x, hook):
        raise _Stop

    # registered last, on the deepest block's output: it fires after every requested hook of that block
    fwd_hooks = [(h, partial(record, name=h)) for h in hooks] + [(f"blocks.{stop - 1}.hook_out", stop_here)]
    batches = range(0, len(order), batch_size)
    for start in progress.bar(batches, f"activations (layers < {stop})") if len(batches) >= 4 else batches:
        rows = order[start : start + batch_size]
        inputs = left_pad([token_ids[i] for i in rows], _pad_id(bridge))
        batch_out.clear()
        try:
            with torch.no_grad(), bridge.hooks(fwd_hooks=fwd_hooks):
                decoder(**inputs, use_cache=False)
        except _Stop:
            pass
        wrong = [h for h in hooks if len(batch_out.get(h, ())) != 1]
        if wrong:
            raise RuntimeError(
                f"hook(s) {', '.join(wrong)} did not fire exactly once in a forward pass; "
                "pass per-block hook names of this model (see bridge.hook_dict)"
            )
        for h in hooks:
            out[h].append(batch_out[h][0])
    inverse = np.argsort(order, kind="stable")
    return {h: np.concatenate(v)[inverse] for h, v in out.items()}


def _key(model_name: str, token_ids: list[list[int]], hook: str) -> str:
    digest = hashlib.sha256(json.dumps([model_name, POSITION_RULE, hook, token_ids]).encode()).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', model_name)}__{hook}__{digest[:20]}"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the arrays' bytes in name order (for one array: of that array's bytes)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def read_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The named arrays of a cache entry, or None if it is missing or unreadable (then it is recomputed)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            arrays = {name: f[name] for name in f.files if name != "sha256"}
            check = str(f["sha256"])
        if _digest(arrays) != check:
            raise ValueError("checksum mismatch")
        return arrays
    except Exception as err:  # any corruption (truncated zip, bad pickle, mismatch) means recompute
        warnings.warn(f"activation cache entry {path.name} is corrupted ({err}); recomputing it", stacklevel=3)
        return None


def write_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write a cache entry atomically: a killed run leaves either the old entry or none, never half a file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays, sha256=_digest(arrays))

    paths.atomic_write(path, write)


def cache_path(model_name: str, token_ids: list[list[int]], what: str) -> Path:
    """Where the cache entry of `what` (a hook name, or another clean-model quantity) for these texts lives."""
    return paths.cache_dir() / f"{_key(model_name, token_ids, what)}.npz"


def _read(path: Path, n: int) -> np.ndarray | None:
    """A cached activation array with one row per text, or None (then it is recomputed)."""
    arrays = read_arrays(path)
    if arrays is None:
        return None
    if "acts" not in arrays or arrays["acts"].shape[0] != n:
        warnings.warn(f"activation cache entry {path.name} has the wrong shape; recomputing it", stacklevel=3)
        return None
    return arrays["acts"]


def collect(
    bridge,
    model_name: str,
    texts: list[str],
    hooks: list[str],
    *,
    max_tokens: int = 128,
    batch_size: int = 32,
    use_cache: bool = True,
) -> dict[str, np.ndarray]:
    """Last-token activations for every hook, read from the disk cache or computed in one forward pass."""
    token_ids = tokenize_last(bridge, list(texts), max_tokens)
    files = {h: cache_path(model_name, token_ids, h) for h in hooks}
    found = {h: _read(f, len(texts)) for h, f in files.items()} if use_cache else {}
    missing = [h for h in hooks if found.get(h) is None]
    if missing:
        fresh = run_last_token(bridge, token_ids, missing, batch_size)
        for h in missing:
            if use_cache:
                write_arrays(files[h], acts=fresh[h])
            found[h] = fresh[h]
    return {h: found[h] for h in hooks}


def layer_activations(
    bridge, model_name: str, texts, layers: list[int], *, final_resid: bool = False, **kw
) -> dict[int | str, tuple[np.ndarray, np.ndarray] | np.ndarray]:
    """`{layer: (A, M)}`: hidden activations (n, d_mlp) and MLP outputs (n, d_model) at the probed token,
    plus the final-layer residual (n, d_model) under the key "final" when `final_resid`.

    M is the MLP's own output (`MLP_OUT`), so M = A W_out + b_out on every model; see
    `post_norm_activations` for what a post-norm block (Gemma) writes instead."""
    hooks = [name.format(layer=layer) for layer in layers for name in (HIDDEN, MLP_OUT)]
    final = RESID_POST.format(layer=bridge.cfg.n_layers - 1)
    acts = collect(bridge, model_name, list(texts), hooks + ([final] if final_resid else []), **kw)
    out: dict = {layer: (acts[HIDDEN.format(layer=layer)], acts[MLP_OUT.format(layer=layer)]) for layer in layers}
    if final_resid:
        out["final"] = acts[final]
    return out


def post_norm_activations(
    bridge, model_name: str, texts, layers: list[int], **kw
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`{layer: (A, M, P)}` at the probed token, from one forward pass (cached like `layer_activations`):
    A hidden activations, M = A W_out + b_out the MLP's output, P what the block adds to the residual
    stream for its MLP (`MLP_POST_NORM`). P == M on pre-norm blocks (SmolLM2); on Gemma 3
    P = (1 + g) * M / rms(M) (`theory.post_norm`, with `models.mlp_post_norm`'s g and eps)."""
    names = (HIDDEN, MLP_OUT, MLP_POST_NORM)
    acts = collect(bridge, model_name, list(texts), [n.format(layer=layer) for layer in layers for n in names], **kw)
    return {layer: tuple(acts[n.format(layer=layer)] for n in names) for layer in layers}
