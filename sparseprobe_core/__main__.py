"""Command line: `python -m sparseprobe_core {rank,manifest,clean-notebooks}`; see --help."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import manifest, paths


def _cmd_manifest(args: argparse.Namespace) -> None:
    notebooks = sorted(Path(p) for p in args.notebooks)
    data = manifest.build_manifest(Path(args.records), notebooks)
    out = Path(args.out)
    manifest.write_json(out, data)
    print(f"wrote {out.relative_to(paths.ROOT) if out.is_relative_to(paths.ROOT) else out}: {len(data['figures'])} figures")


def _cmd_clean(args: argparse.Namespace) -> None:
    for nb in args.notebooks:
        manifest.clean_notebook(Path(nb))


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one line to stderr and return a non-zero code."""
    parser = argparse.ArgumentParser(prog="python -m sparseprobe_core")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifest", help="merge notebook records into a figure manifest")
    m.add_argument("--records", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("notebooks", nargs="+")
    m.set_defaults(func=_cmd_manifest)
    c = sub.add_parser("clean-notebooks", help="strip timestamps and addresses from executed notebooks")
    c.add_argument("notebooks", nargs="+")
    c.set_defaults(func=_cmd_clean)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
