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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadArgument, MissingDependency, ModelNotFound
from .base import fingerprint_dir

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
"""Runtimes of the encoder: what `--backend` takes and an index records."""
COUNTED = 1 << 20
"""Word pieces whose ids `input_tokens` keeps for the next `encode`; past this, what was counted and not yet encoded
is forgotten (about 36 MB of Python ints; an ingestion batch of 128 SciFact abstracts holds about 46,000)."""
EXPORT = "model_int8.onnx"
META = "bertsearch-onnx.json"


def cache_root() -> Path:
    return Path(os.environ.get("BERTSEARCH_CACHE", Path.home() / ".cache" / "bertsearch")).expanduser()


RECIPE = 1
"""How the cached folders of exported and converted models are made (here and in `openvino`: the export, the
conversion, the weight compression, what their records hold). A change that changes what a folder holds raises it:
the folders get new names (`versioned`), and every model is made again, never read as the old recipe made it."""


def versioned(name: str) -> str:
    """A cache folder's name under the current RECIPE (the first recipe's names carry no suffix)."""
    return name + (f"-r{RECIPE}" if RECIPE > 1 else "")


def reading(folder: Path) -> Any:
    """The tokenizer in `folder` (an export's or a conversion's) as the encoder reads with it: no padding, no
    truncation (the encoder cuts to its window itself)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def exported(path: Path, fingerprint: str | None = None) -> Path:
    """The folder holding the int8 ONNX export of the sentence-transformers model at `path`: made on first use."""
    fingerprint = fingerprint or fingerprint_dir(path)
    folder = cache_root() / "onnx" / versioned(fingerprint)
    if (folder / META).is_file():
        return folder
    meta = encoder_meta(path, fingerprint)  # refuses a model it cannot pool before the slow export
    log.warning("exporting %s to ONNX (int8) once, into %s", path, folder)

    def build(tmp: Path) -> None:
        _export(path, tmp)
        shutil.copy(path / "tokenizer.json", tmp / "tokenizer.json")
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")

    return cached(folder, build, META)


def cached(folder: Path, build: Callable[[Path], None], marker: str) -> Path:
    """`folder`, made once by `build(tmp)`, which writes `marker` last: built beside it and renamed into place
    whole, so that a crash leaves no half-made folder and a process that loses the race uses the winner's."""
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def encoder_meta(path: Path, fingerprint: str) -> dict[str, Any]:
    """What an exported encoder needs beside its graph: pooling, window and dimension of the model at `path`."""
    return {"source": str(path), "fingerprint": fingerprint, "pooling": _pooling(path),
            "max_seq_length": _window(path), "dim": int(json.loads((path / "config.json").read_text())["hidden_size"])}


def _window(path: Path) -> int:
    """The encoder's window in word pieces, as sentence-transformers reads it: sentence_bert_config.json's
    max_seq_length (sentence-transformers 5 and before), else the tokenizer's model_max_length (6 writes it there),
    at most the position embeddings."""
    def read(name: str) -> dict[str, Any]:
        f = path / name
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}

    positions = read("config.json").get("max_position_embeddings")
    for value in (read("sentence_bert_config.json").get("max_seq_length"),
                  read("tokenizer_config.json").get("model_max_length")):
        if isinstance(value, int) and 0 < value < 1_000_000:  # transformers writes a huge number for "no limit"
            return min(value, positions) if isinstance(positions, int) else value
    return min(256, positions) if isinstance(positions, int) else 256


def _pooling(path: Path) -> str:
    cfg = next(iter(sorted(path.glob("*_Pooling/config.json"))), None)
    if cfg is None:
        raise ModelNotFound(f"{path} is not a sentence-transformers folder with a pooling module; use --backend torch")
    c = json.loads(cfg.read_text())
    mode = c.get("pooling_mode")  # sentence-transformers 6 writes "pooling_mode": "mean"; earlier, a flag per mode
    if mode in ("mean", "cls") and not any(c.get(k) for k in ("pooling_mode_max_tokens", "pooling_mode_weightedmean_tokens",
                                                               "pooling_mode_lasttoken", "pooling_mode_mean_sqrt_len_tokens")):
        return str(mode)
    flags = [k for k, v in c.items() if k.startswith("pooling_mode_") and v is True]
    if flags == ["pooling_mode_mean_tokens"]:
        return "mean"
    if flags == ["pooling_mode_cls_token"]:
        return "cls"
    raise ModelNotFound(f"{path} pools its tokens in a way the ONNX and OpenVINO backends do not (mean or CLS only); "
                        "use --backend torch")


HEADS = {"encoder": ["hidden"], "reranker": ["logits"], "reader": ["start_logits", "end_logits"]}
"""What an fp32 export computes from (input_ids, attention_mask, token_type_ids), each (batch, tokens): the
transformer's last hidden states (b, t, dim), a cross-encoder's logits (b, labels), or a reader's start and end
logits (b, t) each."""


def export_fp32(path: Path, file: Path, head: str = "encoder") -> None:
    """The transformers model at `path` exported to ONNX in fp32 (`file`), with dynamic batch and token axes; see
    HEADS for what it outputs. Needs torch and transformers (only the export does)."""
    if head not in HEADS:
        raise BadArgument(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingDependency(e.name or "torch", "exporting a model (to ONNX, and from there to OpenVINO)") from None

    auto = {"encoder": transformers.AutoModel, "reranker": transformers.AutoModelForSequenceClassification,
            "reader": transformers.AutoModelForQuestionAnswering}[head]
    # eager attention: an additive mask and a softmax; the SDPA export adds a NaN guard (IsNaN, Select) over every
    # (batch, heads, tokens, tokens) score tensor, which took 40% of the time on OpenVINO
    model = auto.from_pretrained(str(path), local_files_only=True, dtype=torch.float32, attn_implementation="eager").eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    outputs = HEADS[head]

    class Heads(torch.nn.Module):  # the head's outputs, the inputs by keyword (transformers 5's forward)
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state if head == "encoder" else tuple(getattr(out, n) for n in outputs)

    sample = tok(["an example", "another example, a little longer"], return_tensors="pt", padding=True)
    if "token_type_ids" not in sample:
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, *outputs]}
    if head == "reranker":
        axes["logits"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants: none holds a size
        torch.onnx.export(Heads(model), tuple(sample[n] for n in names), str(file), input_names=names,
                          output_names=outputs, opset_version=17, dynamo=False, dynamic_axes=axes)


def _export(path: Path, out: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise MissingDependency("onnxruntime", f"exporting the encoder to ONNX ({e.name} is missing)") from None

    fp32 = out / "model.onnx"
    export_fp32(path, fp32)
    # per channel, matrix products only: mean cosine 0.995 to fp32 on SciFact (per tensor, every op: 0.94)
    quantize_dynamic(str(fp32), str(out / EXPORT), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                     op_types_to_quantize=["MatMul"])
    fp32.unlink()


class OnnxEncoder:
    """The sentence-transformers model at `path` on ONNX Runtime (int8). `name` and `fingerprint` are the model's
    own, as for the torch encoder; the index records the backend beside them."""

    backend = "onnx"
    marker = META  # the file in the export's folder that holds `meta`
    vector_precision = "int8"

    def __init__(self, name: str, path: Path, *, threads: int | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._meta: dict[str, Any] | None = None
        self._fingerprint: str | None = None
        self._counted: dict[str, list[int]] = {}  # ids of the texts `input_tokens` just counted, for `encode`
        self._counted_pieces = 0

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_dir(self.path)
        return self._fingerprint

    def _load(self) -> None:
        folder = self._prepare()
        # read from the model's folder, not the export's record: a reading fixed since the export applies at once
        self._meta = encoder_meta(self.path, self.fingerprint())
        self._tokenizer = reading(folder)

    def _prepare(self) -> Path:
        """The runtime's session, made from the export (made first, once); returns the export's folder."""
        try:
            import onnxruntime as ort
            import tokenizers  # noqa: F401
        except ImportError:
            raise MissingDependency("onnxruntime", "the ONNX backend (--backend onnx)") from None
        folder = exported(self.path, self.fingerprint())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or max(1, min(os.cpu_count() or 1, 8))
        self._session = ort.InferenceSession(str(folder / EXPORT), opts, providers=["CPUExecutionProvider"])
        return folder

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The transformer's last hidden states (b, t, dim) for a padded batch of (b, t) ids."""
        return self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]

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
        """Counts as `encode` will read them; the ids are kept until the next `encode`, which then does not
        tokenize those texts again (ingestion counts each chunk's input before encoding it)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        if self._counted_pieces > COUNTED:  # counted and never encoded (a Ray pool encodes elsewhere): forgotten
            self._counted, self._counted_pieces = {}, 0
        counts = [len(e.ids) for e in encodings]
        self._counted.update((t, e.ids) for t, e in zip(texts, encodings))
        self._counted_pieces += sum(counts)
        return counts

    def input_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's word-piece ids, special tokens included and cut to the window: those `input_tokens` counted
        since the last call, the rest tokenized now."""
        counted, self._counted, self._counted_pieces = self._counted, {}, 0
        todo = [t for t in texts if t not in counted]
        if todo:
            counted.update((t, e.ids) for t, e in zip(todo, self.tokenizer.encode_batch(todo, add_special_tokens=True)))
        return [_cut(counted[t], self.max_tokens) for t in texts]

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Unit vectors, (len(texts), dim): batches of similar length, each padded only to its longest."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size < 1:
            raise BadArgument(f"batch size must be > 0, got {batch_size}")
        pieces = self.input_ids(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(r) for r in pieces], kind="stable")
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            rows = [pieces[j] for j in idx]
            width = max(len(r) for r in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)  # (b, t)
            mask = np.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = row
                mask[r, : len(row)] = 1
            hidden = self._hidden(ids, mask)  # (b, t, dim)
            if self.meta["pooling"] == "cls":
                v = hidden[:, 0]
            else:
                v = mean_pool(hidden, mask)  # (b, dim)
            out[idx] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mean of each row's word-piece vectors, (b, t, dim) under a (b, t) mask -> (b, dim): one contraction, ten
    times as fast as multiplying out the masked (b, t, dim) array first."""
    return np.einsum("btd,bt->bd", hidden, mask.astype(hidden.dtype)) / np.maximum(mask.sum(1, keepdims=True), 1)


def _cut(ids: list[int], window: int) -> list[int]:
    """A sequence cut to the window, keeping its closing special token (as the torch tokenizer's truncation)."""
    return ids if len(ids) <= window else ids[: window - 1] + ids[-1:]
