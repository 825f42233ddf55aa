"""Measure the concept datasets with the embedded model: SmolLM2 token lengths and dense-probe AUROC.

Usage (from the repository root, with the project's environment):
  python data/measure_concepts.py [--tokens-only] [--layers 3,14,25] [--n 200] [NAME ...]

Token lengths are counted without BOS (what `max_tokens` in data/concepts/catalog.toml bounds). The
AUROC is that of the dense output-space probe (`theory.fit_output_probe`, an L2 logistic probe on the
layer's MLP output at the last token), held out on a 50/50 stratified split of `--n` texts per class
(`concepts.subsample`, seed 0). Set SPARSEPROBE_CACHE to keep its activations out of the shared cache.
Prints Markdown tables for data/README.md; `--suggest` also prints a max_tokens per concept (the
longest text rounded up to a multiple of 8, plus 8).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparseprobe_core import activations, concepts, models, theory  # noqa: E402

CATALOG = ROOT / "data" / "concepts" / "catalog.toml"


def main() -> None:
    """Print each concept's token lengths and (unless --tokens-only) its dense-probe AUROC per layer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="concepts (default: every catalog entry that is built)")
    parser.add_argument("--tokens-only", action="store_true", help="only the token lengths (no forward passes)")
    parser.add_argument("--layers", default="3,14,25")
    parser.add_argument("--n", type=int, default=200, help="texts per class for the AUROC")
    parser.add_argument("--suggest", action="store_true", help="print a max_tokens per concept")
    args = parser.parse_args()
    catalog = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
    names = args.names or [n for n in catalog if n in concepts.shipped_concepts()]
    layers = [int(x) for x in args.layers.split(",")]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models.dequantized_copy(models.DEFAULT_MODEL)))
    print("| concept | kind | per class | mean tokens | max tokens | max_tokens (catalog) |")
    print("|---|---|---:|---:|---:|---:|")
    loaded = {}
    for name in names:
        c = concepts.load_concept(name)
        loaded[name] = c
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in c.texts]
        print(
            f"| `{name}` | {catalog[name]['kind']} | {int(c.labels.sum())} | {statistics.mean(lengths):.1f} "
            f"| {max(lengths)} | {catalog[name]['max_tokens']} |"
        )
        if args.suggest:
            print(f"  suggest max_tokens={8 * math.ceil(max(lengths) / 8) + 8}", file=sys.stderr)
    if args.tokens_only:
        return

    from sklearn.metrics import roc_auc_score

    bridge = models.load_model()
    print()
    print("| concept | kind | " + " | ".join(f"layer {layer}" for layer in layers) + " |")
    print("|---|---|" + "---:|" * len(layers))
    for name in names:
        c = concepts.subsample(loaded[name], args.n, seed=0)
        acts = activations.layer_activations(bridge, models.DEFAULT_MODEL, list(c.texts), layers)
        split = concepts.make_split(c.labels, seed=0, test_size=0.5)
        cells = []
        for layer in layers:
            M = acts[layer][1]
            w, b = theory.fit_output_probe(M[split.train], c.labels[split.train])
            cells.append(f"{roc_auc_score(c.labels[split.test], M[split.test] @ w + b):.3f}")
        print(f"| `{name}` | {catalog[name]['kind']} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
