"""The activation store (activations.py): a collection writes each batch in place, resumes after an
interruption with the batches it had finished, publishes complete entries only, reads a large entry
lazily, detects corruption, and its memory does not grow with the number of texts. No model: batches
are synthetic."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sparseprobe_core import activations

HOOKS = ("blocks.1.mlp.hook_post", "blocks.1.mlp.hook_out")
DIMS = {HOOKS[0]: 24, HOOKS[1]: 8}


def _batches(n: int, batch_size: int, skip=()):
    """What iter_last_token yields, with row r of hook h equal to r + dim index / 100 (checkable)."""
    order = np.random.default_rng(0).permutation(n)  # batches hold scattered rows, as texts sorted by length do
    for b in range(-(-n // batch_size)):
        if b in skip:
            continue
        rows = order[b * batch_size : (b + 1) * batch_size]
        yield b, rows, {h: (rows[:, None] + np.arange(d)[None] / 100).astype(np.float32) for h, d in DIMS.items()}


def _expected(n: int, hook: str) -> np.ndarray:
    return (np.arange(n)[:, None] + np.arange(DIMS[hook])[None] / 100).astype(np.float32)


def _store(tmp_path, n, batch_size, hooks=HOOKS):
    entries = {h: tmp_path / f"{h}{activations.ENTRY_SUFFIX}" for h in hooks}
    return activations._PartialStore(tmp_path / ".x.partial", entries, n, -(-n // batch_size)), entries


def test_interrupted_collection_resumes_with_its_finished_batches(tmp_path):
    n, bs = 50, 8
    store, entries = _store(tmp_path, n, bs)
    for b, rows, acts in _batches(n, bs):
        store.write(b, rows, acts)
        if b == 3:
            store.checkpoint()  # batches 0-3 are durable
        if b == 4:
            break  # killed: batch 4 was written but never listed as done
    del store
    assert not any(p.exists() for p in entries.values())  # nothing half-written is ever an entry
    assert all(activations.read_entry(p, n) is None for p in entries.values())
    resumed, _ = _store(tmp_path, n, bs)
    assert resumed.skip() == {0, 1, 2, 3}
    ran = []
    for b, rows, acts in _batches(n, bs, skip=resumed.skip()):
        ran.append(b)
        resumed.write(b, rows, acts)
    resumed.finish()
    assert ran == [4, 5, 6]
    for h, p in entries.items():
        np.testing.assert_array_equal(activations.read_entry(p, n), _expected(n, h))
    assert not (tmp_path / ".x.partial").exists()  # removed once every entry is published


def test_a_resume_for_fewer_hooks_keeps_the_others_progress(tmp_path):
    n, bs = 40, 8
    store, _ = _store(tmp_path, n, bs)
    for b, rows, acts in _batches(n, bs):
        store.write(b, rows, acts)
        if b == 1:
            store.checkpoint()
            break
    one, _ = _store(tmp_path, n, bs, hooks=HOOKS[:1])
    assert one.skip() == {0, 1}
    for b, rows, acts in _batches(n, bs, skip=one.skip()):
        one.write(b, rows, {HOOKS[0]: acts[HOOKS[0]]})
    one.finish()
    other, _ = _store(tmp_path, n, bs, hooks=HOOKS[1:])
    assert other.skip() == {0, 1}  # the second hook's finished batches were kept


def test_a_truncated_partial_file_is_restarted(tmp_path):
    n, bs = 40, 8
    store, _ = _store(tmp_path, n, bs)
    for b, rows, acts in _batches(n, bs):
        store.write(b, rows, acts)
    store.checkpoint()
    file = store.files[HOOKS[0]]
    file.write_bytes(file.read_bytes()[:200])
    again, _ = _store(tmp_path, n, bs)
    assert again.skip() == set()  # the truncated hook must be recomputed, so every batch runs again
    assert not again.done[HOOKS[0]].any() and again.done[HOOKS[1]].all()


def _entry(tmp_path, n=30) -> tuple:
    store, entries = _store(tmp_path, n, 8)
    for b, rows, acts in _batches(n, 8):
        store.write(b, rows, acts)
    store.finish()
    return entries[HOOKS[0]], n


def test_corrupted_entries_warn_and_are_removed(tmp_path):
    entry, n = _entry(tmp_path)
    raw = bytearray((entry / "acts.npy").read_bytes())
    raw[-5] ^= 0xFF  # one flipped bit pattern in the data
    (entry / "acts.npy").write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupted.*checksum mismatch"):
        assert activations.read_entry(entry, n) is None
    assert not entry.exists()  # so that the recomputed entry can take its place
    entry, n = _entry(tmp_path)
    (entry / "acts.npy").write_bytes((entry / "acts.npy").read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupted"):
        assert activations.read_entry(entry, n) is None
    entry, n = _entry(tmp_path)
    with pytest.warns(UserWarning, match="wrong shape"):
        assert activations.read_entry(entry, n + 1) is None


def test_entries_are_read_whole_or_memory_mapped(tmp_path):
    entry, n = _entry(tmp_path)
    assert json.loads((entry / "meta.json").read_text())["hook"] == HOOKS[0]
    whole = activations.read_entry(entry, n)
    lazy = activations.read_entry(entry, n, mapped=True)
    assert type(whole) is np.ndarray and not isinstance(whole.base, np.memmap)
    assert type(lazy) is np.ndarray and isinstance(lazy.base, np.memmap) and not lazy.flags.writeable
    np.testing.assert_array_equal(lazy, whole)


def _peak_growth_mb(tmp_path, n: int, dim: int, batch_size: int = 32) -> float:
    """Peak resident memory (VmHWM, reset first) above the start while `n` rows of `dim` floats are stored."""

    def status(field: str) -> int:
        lines = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in lines if line.startswith(field))

    entries = {"h": tmp_path / f"n{n}{activations.ENTRY_SUFFIX}"}
    row = np.arange(dim, dtype=np.float32)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    start = status("VmRSS:")
    store = activations._PartialStore(tmp_path / f".n{n}.partial", entries, n, -(-n // batch_size))
    for b in range(-(-n // batch_size)):
        rows = np.arange(b * batch_size, min(n, (b + 1) * batch_size))
        store.write(b, rows, {"h": np.broadcast_to(row, (len(rows), dim)) + rows[:, None]})
    store.finish()
    return (status("VmHWM:") - start) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident size from /proc")
def test_peak_memory_of_a_collection_does_not_grow_with_the_texts(tmp_path, monkeypatch):
    """2,000 vs 20,000 rows of 3 SmolLM2 layers' width (3 x (1536 + 576) floats: 49 MB vs 490 MB): the
    peak stays under FLUSH_BYTES (here 8 MiB) plus a few MB of buffers, whatever n."""
    monkeypatch.setattr(activations, "FLUSH_BYTES", 8 << 20)
    monkeypatch.setattr(activations, "CHECKPOINT_S", 0.5)
    dim = 3 * (1536 + 576)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small, large = (_peak_growth_mb(tmp_path, n, dim) for n in (2_000, 20_000))
    print(f"peak above the start: {small:.1f} MB (2,000 rows), {large:.1f} MB (20,000 rows)")
    assert large < 8 + 16, f"peak {large:.0f} MB above the start for 20,000 rows"
    assert large - small < 8, f"peak grew from {small:.0f} MB (2,000 rows) to {large:.0f} MB (20,000 rows)"
