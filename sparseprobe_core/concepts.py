"""Concept datasets: a CSV with columns `text,label` (label 0/1), probed at the last token of `text`.

A sentence-level concept labels the whole text (e.g. French vs English). A token-level concept is
written by cutting the text right after the token of interest, so that token is the last one
(e.g. `x = "hello wor` for "this token is inside a string literal").
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from . import paths

MIN_PER_CLASS = 20


class ConceptError(ValueError):
    """A concept file is unusable; the message says what is wrong and how to fix it, in one line."""


@dataclass(frozen=True)
class Concept:
    """A validated concept: texts, 0/1 labels, and the hash of the file they came from."""

    name: str
    path: Path
    texts: tuple[str, ...]
    labels: np.ndarray
    sha256: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Split:
    """Index arrays of a stratified split; `val` is empty unless asked for."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def shipped_concepts() -> list[str]:
    """Names of the concept files under data/concepts/ (committed) and data/concepts/local/ (built at set-up)."""
    files = list(paths.CONCEPTS.glob("*.csv")) + list((paths.CONCEPTS / "local").glob("*.csv"))
    return sorted(p.stem for p in files)


def resolve(concept: str | Path) -> Path:
    """Map a shipped concept name or a file path to the CSV file."""
    candidate = Path(concept)
    if candidate.suffix == ".csv" or candidate.exists():
        return candidate
    for folder in (paths.CONCEPTS, paths.CONCEPTS / "local"):
        if (folder / f"{concept}.csv").is_file():
            return folder / f"{concept}.csv"
    raise ConceptError(
        f"unknown concept {str(concept)!r}; pass a CSV path or one of: "
        + (", ".join(shipped_concepts()) or "(none built: run ./run_all.sh --setup-only)")
    )


def _fail(path: Path, what: str) -> None:
    raise ConceptError(f"{path}: {what}")


def _label(value: str) -> int | None:
    """0 or 1 from a label cell ("1", "0", and pandas' "1.0" / "0.0"); None for anything else."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def _records(reader: csv.DictReader, path: Path) -> Iterator[tuple[int, dict]]:
    """(line where the record starts, record) of each row; the csv module's errors become ConceptErrors."""
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # e.g. "field larger than field limit": a quote left open swallowed the rest
            _fail(path, f"line {line} cannot be read as CSV ({err}); check that its quotes are closed")
        yield line, row


def parse_concept(raw: bytes, path: Path) -> tuple[list[str], np.ndarray]:
    """Validate the bytes of a concept CSV and return texts and labels, or raise a one-line ConceptError.

    The header is matched case-insensitively (`Text,Label` works); labels may be written 0/1 or 0.0/1.0.
    Rows repeated exactly (same text, same label) are dropped with one warning giving their count;
    the same text under both labels is an error (it would leak across train/test splits)."""
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        _fail(path, f"is not UTF-8 (bad byte at offset {err.start}); re-save the file as UTF-8")
    reader = csv.DictReader(io.StringIO(content, newline=""))
    columns = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
    if "text" not in columns or "label" not in columns:
        _fail(
            path, f"needs columns 'text,label' but has {reader.fieldnames or []}; put a header line `text,label` first"
        )
    texts, labels = [], []
    first: dict[str, tuple[int, int]] = {}  # text -> (line, label) of its first row
    repeated = 0
    for line, row in _records(reader, path):
        if None in row:  # more fields than the header's: DictReader keeps the surplus under the key None
            _fail(path, f'line {line} has more fields than text,label; quote a text that contains a comma: "a, b",1')
        row = {(k or "").strip().lower(): v for k, v in row.items()}
        text, raw_label = row.get("text"), (row.get("label") or "").strip()
        if (row.get("label") is None and text and "\n" in text) or "\n" in (row.get("label") or ""):
            _fail(path, f"line {line} opens a quote that is never closed (the rest of the file is one text); close it")
        if text is None or not text.strip():
            _fail(path, f"line {line} has an empty text; remove the row or fill it in")
        label = _label(raw_label)
        if label is None:
            _fail(path, f"line {line} has label {raw_label!r}; labels must be 0 or 1")
        if text in first:
            earlier, earlier_label = first[text]
            if earlier_label != label:
                _fail(
                    path,
                    f"lines {earlier} and {line} have the same text with labels 0 and 1; "
                    "a text can have one label only: fix or remove one of them",
                )
            repeated += 1
            continue
        first[text] = (line, label)
        texts.append(text)
        labels.append(label)
    if not texts:
        _fail(path, "has no rows, only a header; add examples of both labels 0 and 1")
    if repeated:
        warnings.warn(f"{path.name}: dropped {repeated} repeated row(s) (same text and label)", stacklevel=3)
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        _fail(path, f"has only one class (label {int(y[0])}); a probe needs examples of both 0 and 1")
    if counts.min() < MIN_PER_CLASS:
        _fail(
            path,
            f"has {counts[0]} examples of class 0 and {counts[1]} of class 1; give at least {MIN_PER_CLASS} of each",
        )
    return texts, y


def load_concept(concept: str | Path) -> Concept:
    """Read and validate a concept CSV (a shipped name or a path)."""
    path = resolve(concept)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConceptError(f"{path}: cannot be read ({err.strerror}); check the path") from None
    texts, y = parse_concept(raw, path)
    return Concept(name=path.stem, path=path, texts=tuple(texts), labels=y, sha256=hashlib.sha256(raw).hexdigest())


def subsample(concept: Concept, n_per_class: int | None, seed: int) -> Concept:
    """At most `n_per_class` examples of each class, chosen reproducibly (all of them when None)."""
    if n_per_class is None:
        return concept
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(concept.labels == c))[:n_per_class] for c in (0, 1)]))
    return Concept(
        concept.name, concept.path, tuple(concept.texts[i] for i in keep), concept.labels[keep], concept.sha256
    )


def make_split(y: np.ndarray, seed: int, test_size: float = 0.3, val_size: float = 0.0) -> Split:
    """Stratified train/(val)/test indices, reproducible for a seed; the parts never overlap."""
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    if val_size <= 0:
        return Split(np.sort(rest), np.array([], dtype=int), np.sort(test))
    train, val = train_test_split(rest, test_size=val_size / (1 - test_size), stratify=y[rest], random_state=seed)
    return Split(np.sort(train), np.sort(val), np.sort(test))
