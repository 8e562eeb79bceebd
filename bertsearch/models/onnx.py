"""The encoder on ONNX Runtime, its weights quantised to int8: the same model, about twice as fast on a CPU.

The sentence-transformers folder's transformer is exported once with `torch.onnx` and its matrix products
quantised per channel with ONNX Runtime's dynamic int8 quantisation (`onnxruntime.quantization`; the export route
of sentence-transformers' own `backend="onnx"` goes through optimum, which does not install beside transformers 5).
The export is cached under `$BERTSEARCH_CACHE` (default `~/.cache/bertsearch`), in a folder named by the weights'
fingerprint, so a changed model is exported again and an unchanged one never twice. Searching then needs only
`onnxruntime` and `tokenizers`: no torch, no transformers.

Vectors differ from the torch encoder's a little (mean cosine about 0.995 on SciFact abstracts), so an index
records which backend made its vectors, and searching it with the other is refused (see `Index.open`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadArgument, MissingDependency, ModelNotFound
from .base import fingerprint_dir

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
EXPORT = "model_int8.onnx"
META = "bertsearch-onnx.json"


def cache_root() -> Path:
    return Path(os.environ.get("BERTSEARCH_CACHE", Path.home() / ".cache" / "bertsearch")).expanduser()


def exported(path: Path, fingerprint: str | None = None) -> Path:
    """The folder holding the int8 ONNX export of the sentence-transformers model at `path`: made on first use."""
    fingerprint = fingerprint or fingerprint_dir(path)
    folder = cache_root() / "onnx" / fingerprint
    if (folder / META).is_file():
        return folder
    pooling = _pooling(path)
    log.warning("exporting %s to ONNX (int8) once, into %s", path, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fingerprint}.", dir=folder.parent))
    try:
        _export(path, tmp)
        shutil.copy(path / "tokenizer.json", tmp / "tokenizer.json")
        settings = json.loads((path / "sentence_bert_config.json").read_text()) if (path / "sentence_bert_config.json").is_file() else {}
        meta = {"source": str(path), "fingerprint": fingerprint, "pooling": pooling,
                "max_seq_length": int(settings.get("max_seq_length", 256)),
                "dim": int(json.loads((path / "config.json").read_text())["hidden_size"])}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(folder)  # whole or not at all; another process may have won the race
        except OSError:
            if not (folder / META).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _pooling(path: Path) -> str:
    cfg = next(iter(sorted(path.glob("*_Pooling/config.json"))), None)
    if cfg is None:
        raise ModelNotFound(f"{path} is not a sentence-transformers folder with a pooling module; use --backend torch")
    c = json.loads(cfg.read_text())
    if c.get("pooling_mode_mean_tokens"):
        return "mean"
    if c.get("pooling_mode_cls_token"):
        return "cls"
    raise ModelNotFound(f"{path} pools its tokens in a way the ONNX backend does not (mean or CLS only); use --backend torch")


def _export(path: Path, out: Path) -> None:
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise MissingDependency("onnxruntime", f"exporting the encoder to ONNX ({e.name} is missing)") from None

    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    class Hidden(torch.nn.Module):  # the transformer's last hidden states, by keyword (transformers 5's forward)
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    sample = tok(["an example", "another example, a little longer"], return_tensors="pt", padding=True)
    if "token_type_ids" not in sample:
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    fp32 = out / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(Hidden(model), tuple(sample[n] for n in names), str(fp32), input_names=names,
                          output_names=["hidden"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]})
    # per channel, matrix products only: mean cosine 0.995 to fp32 on SciFact (per tensor, every op: 0.94)
    quantize_dynamic(str(fp32), str(out / EXPORT), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                     op_types_to_quantize=["MatMul"])
    fp32.unlink()


class OnnxEncoder:
    """The sentence-transformers model at `path` on ONNX Runtime (int8). `name` and `fingerprint` are the model's
    own, as for the torch encoder; the index records the backend beside them."""

    backend = "onnx"

    def __init__(self, name: str, path: Path, *, threads: int | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._meta: dict[str, Any] | None = None
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_dir(self.path)
        return self._fingerprint

    def _load(self) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise MissingDependency("onnxruntime", "the ONNX backend (--backend onnx)") from None
        folder = exported(self.path, self.fingerprint())
        self._meta = json.loads((folder / META).read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or max(1, min(os.cpu_count() or 1, 8))
        self._session = ort.InferenceSession(str(folder / EXPORT), opts, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        self._tokenizer = tok

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._load()
        return self._meta  # type: ignore[return-value]

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def max_tokens(self) -> int:
        return int(self.meta["max_seq_length"])

    @property
    def special_tokens(self) -> int:
        return len(self.tokenizer.encode("", add_special_tokens=True).ids)

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[(int(a), int(b)) for a, b in e.offsets] for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def input_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Unit vectors, (len(texts), dim): batches of similar length, each padded only to its longest."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size < 1:
            raise BadArgument(f"batch size must be > 0, got {batch_size}")
        tok, window = self.tokenizer, self.max_tokens
        encodings = tok.encode_batch(list(texts), add_special_tokens=True)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            rows = [_cut(encodings[j].ids, window) for j in idx]
            width = max(len(r) for r in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)  # (b, t)
            mask = np.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = row
                mask[r, : len(row)] = 1
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                               "token_type_ids": np.zeros_like(ids)})[0]  # (b, t, dim)
            if self.meta["pooling"] == "cls":
                v = hidden[:, 0]
            else:
                v = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)  # (b, dim)
            out[idx] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return out


def _cut(ids: list[int], window: int) -> list[int]:
    """A sequence cut to the window, keeping its closing special token (as the torch tokenizer's truncation)."""
    return ids if len(ids) <= window else ids[: window - 1] + ids[-1:]
