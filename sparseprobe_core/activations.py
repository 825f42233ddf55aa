"""Activations at the probed (last) token, collected with TransformerLens hooks into an on-disk store.

Texts are left-padded, so the last position of every row is its probed token and never a pad;
position ids restart at each row's first real token, so absolute-position models (GPT-2) see the
same positions as in an unbatched run. The forward pass runs the HF decoder without its LM head
and stops after the deepest requested layer, so no logits are computed (on Gemma 3, with its
262k-token vocabulary, logits for 32 x 128 tokens alone take 4.3 GB). The model may sit on any device
in any dtype (`models.load_model`); inputs go to its input device and every recorded row comes back as
CPU float32, batch by batch, into the activation store (below): memory does not grow with the number
of texts, and a large entry is read back lazily (memory-mapped).

Which tensor is "the MLP output": the reduction m = a W_out + b_out holds for the MLP's own output,
`blocks.L.mlp.hook_out` (`MLP_OUT`). On pre-norm blocks (Llama, SmolLM2, GPT-2) that is also what the
block adds to the residual stream. Gemma 2/3 blocks normalise it first (`post_feedforward_layernorm`)
and add (1 + g) m / rms(m); TransformerLens calls that `blocks.L.hook_mlp_out` (`MLP_POST_NORM`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import models, paths, progress

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


def pad_id(bridge) -> int:
    """The token that pads a batch: the tokenizer's pad token, else its end-of-text token."""
    tok = bridge.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


class StopForward(Exception):
    """Raised by a hook once every activation a forward pass needs is recorded: the decoder stops there."""


def iter_last_token(
    bridge, token_ids: list[list[int]], hooks: list[str], batch_size: int = 32, skip: Container[int] = ()
) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray]]]:
    """Activations of `hooks` at the last token, one batch at a time: ``(b, rows, {hook: (len(rows), dim)})``,
    batch number b holding the texts `rows` (indices into `token_ids`), as CPU float32 arrays.

    Batches are cut from the texts sorted by length (stable sort), so batch b holds the same texts, padded
    alike, whenever `token_ids` and `batch_size` are the same; the batches in `skip` are not run (a resumed
    collection). Runs the HF decoder wrapped by the bridge (`original_model.base_model`, no LM head) with the
    bridge's hooks, its inputs on the model's input device, and stops at the end of the deepest requested
    block: neither the later layers nor the logits are computed, even when the last block's residual is
    requested (the bridge's `stop_at_layer` cannot stop there and would compute logits over the whole
    vocabulary). Each recorded row goes to the CPU as float32 as soon as its hook fires."""
    stop = max(hook_layer(h) for h in hooks) + 1
    decoder = bridge.original_model.base_model
    device = models.input_device(bridge)
    order = np.argsort([len(x) for x in token_ids], kind="stable")
    batch_out: dict[str, list[np.ndarray]] = {}

    def record(x, hook, name):
        batch_out.setdefault(name, []).append(models.to_numpy(x[:, -1]).copy())

    def stop_here(x, hook):
        raise StopForward

    # registered last, on the deepest block's output: it fires after every requested hook of that block
    fwd_hooks = [(h, partial(record, name=h)) for h in hooks] + [(f"blocks.{stop - 1}.hook_out", stop_here)]
    todo = [b for b in range(-(-len(order) // batch_size)) if b not in skip]
    for b in progress.bar(todo, f"activations (layers < {stop})") if len(todo) >= 4 else todo:
        rows = order[b * batch_size : (b + 1) * batch_size]
        inputs = {k: v.to(device) for k, v in left_pad([token_ids[i] for i in rows], pad_id(bridge)).items()}
        batch_out.clear()
        try:
            with torch.no_grad(), bridge.hooks(fwd_hooks=fwd_hooks):
                decoder(**inputs, use_cache=False)
        except StopForward:
            pass
        wrong = [h for h in hooks if len(batch_out.get(h, ())) != 1]
        if wrong:
            raise RuntimeError(
                f"hook(s) {', '.join(wrong)} did not fire exactly once in a forward pass; "
                "pass per-block hook names of this model (see bridge.hook_dict)"
            )
        yield b, rows, {h: batch_out[h][0] for h in hooks}


def run_last_token(bridge, token_ids: list[list[int]], hooks: list[str], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Activations of `hooks` at each sequence's last token, shape (n, dim) per hook, CPU float32, held in
    memory (`iter_last_token`'s batches put back in input order; `collect` writes them to disk instead)."""
    out: dict[str, np.ndarray] = {}
    for _, rows, acts in iter_last_token(bridge, token_ids, hooks, batch_size):
        for h, a in acts.items():
            if h not in out:
                out[h] = np.empty((len(token_ids), a.shape[1]), dtype=np.float32)
            out[h][rows] = a
    return out


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


# -- the activation store ------------------------------------------------------------------------------
# One entry per (model as loaded, texts, hook): a folder `<model>__<hook>__<key>.acts` holding the
# (n, dim) float32 array as a plain .npy file (`acts.npy`, rows in input order) and its sha256
# (`meta.json`). A collection writes each batch's rows in place into per-hook .npy files under a
# hidden `.<model>__<texts>__b<batch size>.partial` folder, memory-mapped, with the finished batches
# listed in its `done.npz`; an interrupted collection resumes from there (same texts, same batch size:
# the same batches, so the same numbers), and a finished hook's file is moved into its entry folder,
# which appears by one atomic rename, so a reader never sees a partial entry.
MAP_ABOVE_BYTES = 256 << 20  # `collect` memory-maps its entries when they add up to more; else reads them whole
FLUSH_BYTES = 64 << 20  # a collection unmaps its files after writing this much: its resident-memory bound
CHECKPOINT_S = 10.0  # and lists its finished batches (after an fsync) at least this often
ENTRY_SUFFIX = ".acts"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name)


def _texts_digest(model_tag: str, token_ids: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps([model_tag, POSITION_RULE, token_ids]).encode()).hexdigest()


def store_entries(model_tag: str, token_ids: list[list[int]], hooks: list[str]) -> dict[str, Path]:
    """The store entry of each hook for these texts, on the model `model_tag` (`models.cache_tag`)."""
    digest = _texts_digest(model_tag, token_ids)
    return {
        h: paths.cache_dir()
        / f"{_slug(model_tag)}__{h}__{hashlib.sha256(f'{digest}/{h}'.encode()).hexdigest()[:20]}{ENTRY_SUFFIX}"
        for h in hooks
    }


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streamed: memory does not grow with the file


def read_entry(path: Path, n: int, mapped: bool = False) -> np.ndarray | None:
    """A store entry as an (n, dim) float32 array, or None if it is missing, corrupted or of another length
    (then it is removed, with a warning, and recomputed). The sha256 is checked on every read (streamed);
    `mapped`: the array is memory-mapped (read-only, its rows read from disk when used), else read whole."""
    if not path.is_dir():
        return None
    file = path / "acts.npy"
    try:
        if _file_sha256(file) != json.loads((path / "meta.json").read_text())["sha256"]:
            raise ValueError("checksum mismatch")
        acts = np.load(file, mmap_mode="r" if mapped else None)
        problem = None if acts.ndim == 2 and acts.shape[0] == n else "has the wrong shape"
    except Exception as err:  # any corruption (missing or truncated file, bad header, mismatch) means recompute
        problem = f"is corrupted ({err})"
    if problem:
        warnings.warn(f"activation cache entry {path.name} {problem}; recomputing it", stacklevel=3)
        shutil.rmtree(path, ignore_errors=True)
        return None
    return np.asarray(acts)  # a plain ndarray (a view of the memory map for a large entry)


def _publish(entry: Path, file: Path, hook: str) -> None:
    """Move a finished .npy `file` into the store as `entry`, with its sha256, by one atomic rename."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        digest = _file_sha256(file)
        os.replace(file, tmp / "acts.npy")
        (tmp / "meta.json").write_text(json.dumps({"hook": hook, "sha256": digest}))

    paths.atomic_write(entry, write)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created, and removed after): one process at a time
    collects into a given partial store; another waits, then finds the entries complete."""
    import fcntl  # POSIX only, like the rest of the store's file handling

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a")  # held open until the lock is released
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break  # still the lock file; else its holder removed it while this process waited
        except FileNotFoundError:
            pass
        f.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        f.close()


class _PartialStore:
    """The unfinished entries of one collection (see "the activation store" above): per hook an (n, dim)
    .npy file whose rows are written in place, and per hook the batches already written.

    Memory: the files are memory-mapped while written and unmapped after every `FLUSH_BYTES` of rows, so
    the written pages stay in the OS page cache, not in this process; every `CHECKPOINT_S` the files are
    fsynced before their batches are listed as done, so a listed batch is on disk whatever stops the run."""

    def __init__(self, folder: Path, entries: dict[str, Path], n: int, n_batches: int):
        self.folder, self.entries, self.n = folder, entries, n
        folder.mkdir(parents=True, exist_ok=True)
        self.files = {h: folder / f"{p.name}.npy" for h, p in entries.items()}
        self.listed = read_arrays(folder / "done.npz") or {}  # every hook's progress, this run's and others'
        self.done = {}
        for h, p in entries.items():
            done = self.listed.get(p.name)
            if done is None or len(done) != n_batches or not self._usable(self.files[h]):
                self.files[h].unlink(missing_ok=True)
                done = np.zeros(n_batches, dtype=bool)
            self.done[h] = done.copy()
        self.maps: dict[str, np.ndarray] = {}
        self.pending: list[int] = []
        self.written, self.since = 0, time.monotonic()

    def _usable(self, file: Path) -> bool:
        try:
            return np.load(file, mmap_mode="r").shape[0] == self.n
        except (OSError, ValueError):  # missing, or truncated
            return False

    def skip(self) -> set[int]:
        """The batches that every hook of this collection already has."""
        return {int(b) for b in np.flatnonzero(np.logical_and.reduce(list(self.done.values())))}

    def write(self, b: int, rows: np.ndarray, acts: dict[str, np.ndarray]) -> None:
        """Write batch `b`'s rows of every hook in place."""
        for h, a in acts.items():
            if h not in self.maps:
                new = not self.files[h].is_file()
                shape = (self.n, a.shape[1])
                self.maps[h] = np.lib.format.open_memmap(self.files[h], "w+" if new else "r+", np.float32, shape)
            self.maps[h][rows] = a
            self.written += a.nbytes
        self.pending.append(b)
        if self.written >= FLUSH_BYTES:
            self.maps.clear()  # unmapped: what was written leaves this process's memory
            self.written = 0
        if time.monotonic() - self.since >= CHECKPOINT_S:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the batches written so far durable, then list them as done (atomically)."""
        self.maps.clear()
        for file in self.files.values():
            if file.is_file():
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for h, done in self.done.items():
            done[self.pending] = True
            self.listed[self.entries[h].name] = done
        write_arrays(self.folder / "done.npz", **self.listed)
        self.pending, self.written, self.since = [], 0, time.monotonic()

    def finish(self) -> None:
        """Publish every hook's file as its store entry; remove the folder once no other collection uses it."""
        self.checkpoint()
        for h, entry in self.entries.items():
            if not self.done[h].all():
                raise RuntimeError(f"the collection of {h} ended with batches missing; rerun to resume it")
            _publish(entry, self.files[h], h)
            del self.listed[entry.name]
        if self.listed:
            write_arrays(self.folder / "done.npz", **self.listed)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def _collect_into_store(bridge, tag: str, token_ids: list[list[int]], entries: dict[str, Path], batch_size: int):
    """Compute the entries that are not in the store (one forward pass), resuming an interrupted collection
    of the same texts and batch size; one process at a time per partial store."""
    n = len(token_ids)
    key = f"{_slug(tag)}__{_texts_digest(tag, token_ids)[:20]}__b{batch_size}"
    with _locked(paths.cache_dir() / f".{key}.lock"):
        todo = {h: p for h, p in entries.items() if not p.is_dir()}  # another process may have written some
        if todo:
            store = _PartialStore(paths.cache_dir() / f".{key}.partial", todo, n, -(-n // batch_size))
            for b, rows, acts in iter_last_token(bridge, token_ids, list(todo), batch_size, skip=store.skip()):
                store.write(b, rows, acts)
            store.finish()


def _size(entry: Path) -> int:
    try:
        return (entry / "acts.npy").stat().st_size
    except OSError:
        return 0


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
    """Last-token activations for every hook: read from the activation store, or computed in one forward
    pass over the missing hooks and written to the store batch by batch (resuming an interrupted
    collection). `use_cache=False`: computed and held in memory, the store untouched.

    Entries are keyed by the model as loaded (`models.cache_tag`: name, and device kind and dtype unless
    CPU float32), the texts' token ids and the hook. Collecting holds one batch's forward pass and at most
    `FLUSH_BYTES` of written rows, whatever the number of texts; the arrays come back memory-mapped when
    they add up to more than `MAP_ABOVE_BYTES` (e.g. 20,000 texts at 3 layers of SmolLM2: 507 MB), else
    in memory. A corrupted entry is recomputed (with a warning)."""
    token_ids = tokenize_last(bridge, list(texts), max_tokens)
    if not use_cache:
        return run_last_token(bridge, token_ids, hooks, batch_size)
    n, tag = len(token_ids), models.cache_tag(bridge, model_name)
    entries = store_entries(tag, token_ids, hooks)
    for _ in range(2):  # a second round recomputes what read_entry found corrupted (and removed)
        if not all(p.is_dir() for p in entries.values()):
            _collect_into_store(bridge, tag, token_ids, entries, batch_size)
        mapped = sum(_size(p) for p in entries.values()) > MAP_ABOVE_BYTES
        found = {h: read_entry(p, n, mapped) for h, p in entries.items()}
        if all(a is not None for a in found.values()):
            return found
    raise RuntimeError(f"activations written to {paths.cache_dir()} could not be read back; is the disk full?")


def layer_activations(
    bridge,
    model_name: str,
    texts,
    layers: list[int],
    *,
    final_resid: bool = False,
    also: Sequence[str] = (),
    **kw,
) -> dict[int | str, tuple[np.ndarray, np.ndarray] | np.ndarray]:
    """`{layer: (A, M)}`: hidden activations (n, d_mlp) and MLP outputs (n, d_model) at the probed token,
    plus the final-layer residual (n, d_model) under the key "final" when `final_resid`.

    M is the MLP's own output (`MLP_OUT`), so M = A W_out + b_out on every model; see
    `post_norm_activations` for what a post-norm block (Gemma) writes instead. `also`: more hook names
    collected in the same forward pass, into the cache only (a later call reads them without a pass of its
    own; they are not returned)."""
    hooks = [name.format(layer=layer) for layer in layers for name in (HIDDEN, MLP_OUT)]
    final = RESID_POST.format(layer=bridge.cfg.n_layers - 1)
    wanted = hooks + ([final] if final_resid else [])
    acts = collect(bridge, model_name, list(texts), wanted + [h for h in also if h not in wanted], **kw)
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
