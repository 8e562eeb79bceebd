"""The encoder, the cross-encoder reranker and the extractive reader on OpenVINO, compiled for this CPU.

Each model is exported once to ONNX in fp32 (`onnx.export_fp32`), converted with `openvino.convert_model` and
saved as OpenVINO IR under `$BERTSEARCH_CACHE/openvino/FINGERPRINT-ROLE` (default `~/.cache/bertsearch`; `folder_name`),
so a changed model, or a changed way of converting it (`onnx.RECIPE`), is converted again and an unchanged one never twice.
Running a converted model needs only `openvino` and `tokenizers`: no torch, no transformers.

Precision: "auto" compiles for bfloat16 where the CPU runs it natively (AVX-512 BF16 or AMX; mean cosine 0.99998 to
fp32 on SciFact abstracts), else fp32; "fp32" and "bf16" ask for one. "int8" (the encoder only) runs a copy whose
weights NNCF compressed to int8, the activations quantised as they come (`quantized`, INT8_GROUP): 1.8x as fast as
fp32 on a CPU with AVX-512 VNNI and no native bfloat16, at a mean cosine of 0.999 to fp32. A new index takes it on
such a CPU (`auto_precision`) and records it: its queries are int8 too. Each model is compiled with a stream per
core (threads: the cores this process may run on), and a call's inputs, sorted by length, go in small batches padded
to a multiple of PAD_TO word pieces (ENCODER_PAD_TO for the encoder), one batch per stream at a time: the reranker's
20 candidates as a few requests rather than one padded to the longest candidate (2.3x as fast as torch in `ask`,
where one request was not faster).
The compiled model is cached beside the IR, a folder for each set of settings (`compiled_dir`), so a later process
starts sooner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadArgument, BertsearchError, MissingDependency
from .base import fingerprint_dir
from .onnx import OnnxEncoder, cache_root, cached, encoder_meta, export_fp32, mean_pool, reading, versioned
from .reader import ExtractiveReader
from .reranker import MAX_LENGTH_CAP, CrossEncoderReranker

log = logging.getLogger(__name__)

MARKER = "bertsearch-openvino.json"
IR = "model.xml"
COMPILED = "compiled"
ENCODER_TOKENS = 1024
"""Padded word pieces per encoder request at most (4 chunks of 256, 8 of 128)."""
QUERY_TOKENS = 512
"""Padded word pieces per reranker or reader request at most: small requests that pad little, one per stream at a
time (wiki-demo's queries, 20 candidates each: 1.9x as fast as one request of all 20)."""
PAD_TO = 32
"""A batch is padded to a multiple of this many word pieces: the runtime prepares its kernels once per input shape,
and fewer shapes recur more often (SciFact chunks: 1.2x as fast as each batch padded to its own longest)."""
ENCODER_PAD_TO = 16
"""The encoder's batches, many more than a query's, pad less: the 600 SciFact abstracts' chunks encode 1.06x as fast
as padded to multiples of 32 (their padding: 4% of the word pieces against 8%; `scripts/probe_openvino.py`)."""
PRECISIONS = ("auto", "fp32", "bf16", "int8")
INT8 = "int8"
INT8_GROUP = 128
"""The int8 encoder quantises its activations at run time in groups of this many values, each with its own scale:
on 600 wiki-demo passages, a mean cosine to fp32 of 0.99915 at 1.9x fp32's speed (AVX-512 VNNI), against 0.99938 at
1.7x for groups of 64 and 0.99821 at 1.9x for groups of 384; static int8 (NNCF, calibrated) gave 0.9979 at 2.7x and
lost 0.007 nDCG@10 on SciFact (`scripts/probe_int8.py`, docs/measurements/speed.md)."""


def _openvino() -> Any:
    try:
        import openvino
        import tokenizers  # noqa: F401
    except ImportError as e:
        raise MissingDependency("openvino", f"the OpenVINO backend ({e.name} is missing)") from None
    return openvino


def folder_name(fingerprint: str, role: str) -> str:
    """The cache folder's name for a model (its weights' fingerprint) in a role ("encoder", "encoder-int8", ...),
    under the current `onnx.RECIPE`."""
    return versioned(f"{fingerprint}-{role}")


def converted(path: Path, role: str, fingerprint: str | None = None) -> Path:
    """The folder holding the OpenVINO IR (fp32 weights) of the model at `path` in `role` ("encoder", "reranker" or
    "reader"; see `onnx.HEADS`), its tokenizer and what it needs beside them: made on first use."""
    fingerprint = fingerprint or fingerprint_dir(path)
    folder = cache_root() / "openvino" / folder_name(fingerprint, role)
    if (folder / MARKER).is_file():
        return folder
    meta = encoder_meta(path, fingerprint) if role == "encoder" else {"source": str(path), "fingerprint": fingerprint}
    meta["role"] = role
    ov = _openvino()
    log.warning("converting the %s to OpenVINO, once for this machine (about 10-20 s; kept in %s)", role, folder)

    def build(tmp: Path) -> None:
        onnx_file = tmp / "model.onnx"
        export_fp32(path, onnx_file, role)
        ov.save_model(ov.convert_model(str(onnx_file)), str(tmp / IR), compress_to_fp16=False)
        onnx_file.unlink()
        shutil.copy(path / "tokenizer.json", tmp / "tokenizer.json")
        if role == "encoder":  # what every compile of it must come close to (`verify`)
            meta["check"] = _fp32_check(tmp)
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")

    return cached(folder, build, MARKER)


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def quantized(path: Path, fingerprint: str | None = None) -> Path:
    """The folder holding the encoder at `path` with int8 weights (OpenVINO IR), made on first use from the fp32 IR
    of `converted` by NNCF's weight compression (asymmetric, per output channel; no data needed). At run time the
    activations are quantised as they come, per group of INT8_GROUP values (`compile_ir`)."""
    fingerprint = fingerprint or fingerprint_dir(path)
    folder = cache_root() / "openvino" / folder_name(fingerprint, "encoder-int8")
    if (folder / MARKER).is_file():
        return folder
    source = converted(path, "encoder", fingerprint)
    ov = _openvino()
    try:
        import nncf
    except ImportError:
        raise MissingDependency("nncf", "the int8 encoder on OpenVINO (--precision int8)") from None
    log.warning("compressing the encoder's weights to int8, once for this machine (kept in %s)", folder)

    def build(tmp: Path) -> None:
        said = logging.getLogger("nncf")  # its log writes a table to stdout, which is for results (--json)
        level = said.level
        said.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # and its progress bars
                model = nncf.compress_weights(ov.Core().read_model(str(source / IR)),
                                              mode=nncf.CompressWeightsMode.INT8_ASYM)
        finally:
            said.setLevel(level)
        ov.save_model(model, str(tmp / IR), compress_to_fp16=False)
        shutil.copy(source / "tokenizer.json", tmp / "tokenizer.json")
        meta = json.loads((source / MARKER).read_text(encoding="utf-8"))
        (tmp / MARKER).write_text(json.dumps({**meta, "precision": INT8, "nncf": nncf.__version__,
                                              "check": {"text": CHECK, "fp32": reference(source)}}, indent=2) + "\n")

    return cached(folder, build, MARKER)


CHECK = "What causes the northern lights?"
"""The sentence each compiled encoder is checked on (`verify`): short (1 x 16 word pieces, padded), so the check costs
a process about 20 ms before its first query (import, open and a first search of the demo index in one process:
0.346 against 0.328 s)."""
CHECK_FLOOR = 0.98
"""The encoder, once compiled, must give CHECK a mean hidden state this close (cosine) to fp32's, recorded when it was
converted (on the Xeon: bf16 0.9999, int8 0.998): a model that compiled wrong fails loudly instead of indexing wrong
vectors. (Added for int8 after an int8 reranker, since reverted, once gave logits 2,800 times fp32's; for every
precision after OpenVINO's cache handed a bf16 compile the model compiled for fp32: `compiled_dir`.)"""


def _check(runner: Runner, tokenizer: Any) -> np.ndarray:
    """The mean of the last hidden state for CHECK."""
    x = padded([tokenizer.encode(CHECK).ids], pad_to=ENCODER_PAD_TO)
    return mean_pool(runner.outputs([x])[0][0], x["attention_mask"])[0]


def _fp32_check(folder: Path) -> dict[str, Any]:
    """CHECK's output from the IR in `folder`, compiled for fp32 without the cache, as MARKER records it."""
    v = _check(Runner(compile_ir(folder, "fp32", threads=1, cache=False)), reading(folder))
    return {"text": CHECK, "fp32": [round(float(x), 6) for x in v]}


def reference(folder: Path) -> list[float]:
    """fp32's output for CHECK, recorded in `folder`'s MARKER when the encoder was converted; for a folder made by an
    older version, now (an int8 folder's from the fp32 IR it was made from) and then recorded."""
    record = folder / MARKER
    meta = json.loads(record.read_text(encoding="utf-8"))
    if (meta.get("check") or {}).get("text") != CHECK:
        source = folder.parent / folder_name(str(meta.get("fingerprint")), "encoder")
        if meta.get("precision") == INT8 and (source / MARKER).is_file():
            meta["check"] = {"text": CHECK, "fp32": reference(source)}
        else:
            meta["check"] = _fp32_check(folder)
        tmp = folder / f".{MARKER}.{os.getpid()}"
        with contextlib.suppress(OSError):  # a cache the user may not write to: made again next time
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, record)  # whole or not at all: another process may be reading it
    return meta["check"]["fp32"]


def verify(folder: Path, runner: Runner, precision: str, tokenizer: Any) -> None:
    """Refuses a compiled encoder whose output strays from fp32's on CHECK (see CHECK_FLOOR)."""
    got, want = _check(runner, tokenizer), np.asarray(reference(folder), dtype=np.float32)
    cos = float(got @ want / max(float(np.linalg.norm(got) * np.linalg.norm(want)), 1e-12))
    if cos >= CHECK_FLOOR:
        return
    if precision == INT8:
        fix = "Index into a new folder with --precision fp32 (an int8 index has to be made again that way)"
    else:
        fix = (f"Remove {folder} so that it is converted and compiled again; if this message comes back, index into "
               "a new folder with --backend torch")
    raise BertsearchError(
        f"the encoder compiled on this CPU ({INT8 if precision == INT8 else precision_hint(precision)}) strays from fp32"
        f" (cosine {cos:.3f} on a check sentence, where 0.998 or more is usual), so its vectors would be wrong; "
        f"nothing was encoded with it. {fix}."
        + (f" (Cached in {folder}: removing the folder makes it again.)" if precision == INT8 else "")
    )


BELOW_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")
"""Settings of $ONEDNN_MAX_CPU_ISA that leave out the CPU's bfloat16 instructions."""


def native_bf16() -> bool:
    """Whether OpenVINO runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX). $ONEDNN_MAX_CPU_ISA, which
    OpenVINO's kernels obey but its list of capabilities does not, can rule it out (the speed notes use it to run as
    a CPU without bfloat16 would)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in BELOW_BF16:
        return False
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return next((set(line.partition(":")[2].split()) for line in text.splitlines() if line.startswith("flags")), set())


VNNI = {"avx512_vnni", "avx_vnni"}
"""Linux's names of the CPU features that multiply int8 (AVX-512 VNNI, AVX-VNNI)."""


def require_vnni(flags: set[str] | None = None) -> None:
    """Refuses int8 for a new index on a CPU known to lack VNNI, where it would run slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    if flags and not flags & VNNI:
        raise BadArgument("--precision int8 needs a CPU with VNNI (AVX-512 VNNI or AVX-VNNI) to multiply in int8, and "
                          "this one has neither: int8 would run slower than fp32 here. Leave out --precision")


def auto_precision(bf16: bool | None = None, flags: set[str] | None = None) -> str:
    """What "auto" gives a new index's encoder on OpenVINO: bfloat16 where the CPU runs it natively; else int8
    where it has VNNI (AVX-512 VNNI or AVX-VNNI: int8 dot products; 1.8x as fast as fp32 there) and NNCF is
    installed to compress the weights; else fp32."""
    import importlib.util

    if native_bf16() if bf16 is None else bf16:
        return "bf16"
    flags = cpu_flags() if flags is None else flags
    if flags & VNNI and importlib.util.find_spec("nncf") is not None:
        return INT8
    return "fp32"


def precision_hint(precision: str) -> str:
    """OpenVINO's inference precision for bertsearch's `precision`: bf16 when asked, or "auto" on a CPU that runs
    it natively; else f32."""
    if precision not in PRECISIONS:
        raise BadArgument(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16() else "f32"
    return "bf16" if precision == "bf16" else "f32"  # int8: what it does not quantise runs in fp32


def compile_ir(folder: Path, precision: str, *, threads: int | None = None, cache: bool = True) -> Any:
    """The IR in `folder` compiled for this machine's CPU: a stream per core, each running one request on one
    thread (a call's batches run side by side; on a busy machine a stream that waits holds up no other). With
    `cache`, the compiled model is kept beside the IR (`compiled_dir`): a later process loads it instead of compiling."""
    ov = _openvino()
    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint(precision), "PERFORMANCE_HINT": "THROUGHPUT",
                              "INFERENCE_NUM_THREADS": threads if threads is not None else cpus()}
    if precision == INT8:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = INT8_GROUP
    if cache:
        where = compiled_dir(folder, config)
        try:
            where.mkdir(parents=True, exist_ok=True)  # OpenVINO refuses to compile into a folder it cannot make
            config["CACHE_DIR"] = str(where)
        except OSError:  # a cache the user may only read: compiled afresh, and nothing kept
            log.info("cannot make %s: the model is compiled without keeping the result", where)
    return core.compile_model(str(folder / IR), "CPU", config)


def compiled_dir(folder: Path, config: dict[str, Any]) -> Path:
    """Where the model compiled from the IR in `folder` with `config` is cached: a folder for each set of settings.

    OpenVINO's cache names a compiled model by the IR's path and some of the settings only, not the precision: a
    compile for bfloat16 loaded the model compiled earlier for fp32 from the same IR, and then computed wrong numbers
    (a sentence's mean hidden state of norm 3.7 where 5.4 is right) or crashed the process (found 2026-12-06;
    OpenVINO 2026.4). Compiled models that older versions kept loose in `compiled/` are removed, as they may be such
    a mix-up."""
    root = folder / COMPILED
    if root.is_dir():
        for stale in root.glob("*.blob"):
            with contextlib.suppress(OSError):
                stale.unlink()
    key = hashlib.sha256(json.dumps(sorted((k, str(v)) for k, v in config.items())).encode()).hexdigest()[:16]
    return root / key


def length_batches(lengths: list[int], max_rows: int, max_tokens: int) -> list[np.ndarray]:
    """Indices of the inputs, shortest first, cut into batches of at most `max_rows` inputs and, past the first of
    a batch, at most `max_tokens` word pieces once padded to its longest: little padding, and small requests."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < max_rows and (end - start + 1) * lengths[order[end]] <= max_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


class Runner:
    """A compiled model and its requests (one per stream): `run` sends batches through all of them at once.

    One caller at a time (the engine's shared models call from one worker thread)."""

    def __init__(self, compiled: Any) -> None:
        from openvino import AsyncInferQueue

        self.compiled = compiled
        self._queue = AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def run(self, inputs: list[dict[str, np.ndarray]], each: Any) -> None:
        """Calls `each(i, outputs)` for each of `inputs` as its request finishes (outputs: arrays that the request
        reuses afterwards; copy what must be kept)."""
        n = len(self.compiled.outputs)
        errors: list[BaseException] = []

        def done(request: Any, i: int) -> None:
            try:
                each(i, [request.get_output_tensor(k).data for k in range(n)])
            except BaseException as e:  # noqa: BLE001 - raised in the caller below, never lost in a runtime thread
                errors.append(e)

        self._queue.set_callback(done)
        for i, x in enumerate(inputs):
            self._queue.start_async(x, i)
        self._queue.wait_all()
        if errors:
            raise errors[0]

    def outputs(self, inputs: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Every output of each of `inputs`, copied."""
        out: list[list[np.ndarray]] = [[] for _ in inputs]

        def keep(i: int, arrays: list[np.ndarray]) -> None:
            out[i] = [np.array(a) for a in arrays]

        self.run(inputs, keep)
        return out


def _check_device(device: str | None) -> None:
    if device is not None and not str(device).startswith("cpu"):
        raise BadArgument(f"the openvino backend runs on the CPU, not {device}; leave out the device or use torch")


class Pieces:
    """The calls bertsearch makes of a transformers fast tokenizer (`__call__` for texts or pairs, with offsets,
    word ids, sequence ids and overflowing windows; `num_special_tokens_to_add`), answered by `tokenizers`
    alone, from the same tokenizer.json."""

    is_fast = True

    def __init__(self, file: Path) -> None:
        from tokenizers import Tokenizer

        self._plain = Tokenizer.from_file(str(file))
        self._plain.no_truncation()
        self._plain.no_padding()
        self._cutting: dict[tuple[int, int, str], Any] = {}

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return int(self._plain.post_processor.num_special_tokens_to_add(pair))

    def __call__(
        self,
        text: list[str],
        text_pair: list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str = False,
        max_length: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        **_: Any,
    ) -> Encoded:
        if isinstance(text, str) or isinstance(text_pair, str):
            raise BadArgument("Pieces takes lists of texts (a batch)")
        tok = self._plain
        if truncation:
            if max_length is None:
                raise BadArgument("truncation needs max_length")
            strategy = truncation if isinstance(truncation, str) else "longest_first"
            tok = self._truncating(max_length, stride, strategy)
        inputs = list(text) if text_pair is None else list(zip(text, text_pair))
        encodings = tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
        rows, owner = [], []
        for i, e in enumerate(encodings):  # a text, then its overflowing windows (as transformers orders them)
            parts = [e, *e.overflowing] if return_overflowing_tokens else [e]
            rows.extend(parts)
            owner.extend([i] * len(parts))
        return Encoded(rows, owner if return_overflowing_tokens else None)

    def _truncating(self, max_length: int, stride: int, strategy: str) -> Any:
        key = (max_length, stride, strategy)
        if key not in self._cutting:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._plain.to_str())
            tok.enable_truncation(max_length, stride=stride, strategy=strategy)
            self._cutting[key] = tok
        return self._cutting[key]


class Encoded(dict):
    """A batch as transformers' BatchEncoding shows it: lists by key, and word and sequence ids by row."""

    def __init__(self, rows: list[Any], owner: list[int] | None) -> None:
        super().__init__(input_ids=[e.ids for e in rows], attention_mask=[e.attention_mask for e in rows],
                         token_type_ids=[e.type_ids for e in rows],
                         offset_mapping=[[(int(a), int(b)) for a, b in e.offsets] for e in rows])
        if owner is not None:
            self["overflow_to_sample_mapping"] = owner
        self._rows = rows

    def word_ids(self, i: int = 0) -> list[int | None]:
        return self._rows[i].word_ids

    def sequence_ids(self, i: int = 0) -> list[int | None]:
        return self._rows[i].sequence_ids


def padded(rows: list[list[int]], types: list[list[int]] | None = None, *, pad_to: int = PAD_TO) -> dict[str, np.ndarray]:
    """One model input from rows of word-piece ids (and token types), padded on the right to the longest, rounded
    up to a multiple of `pad_to`."""
    width = -(-max(len(r) for r in rows) // pad_to) * pad_to
    ids = np.zeros((len(rows), width), dtype=np.int64)  # (b, t)
    mask = np.zeros_like(ids)
    token_types = np.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
        if types is not None:
            token_types[r, : len(row)] = types[r]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types}


class OpenVINOEncoder(OnnxEncoder):
    """The sentence-transformers model at `path` on OpenVINO. `name` and `fingerprint` are the model's own, as
    for the torch encoder; the index records the backend beside them."""

    backend = "openvino"
    marker = MARKER

    def __init__(self, name: str, path: Path, *, device: str | None = None, precision: str = "auto",
                 threads: int | None = None) -> None:
        _check_device(device)
        if precision not in PRECISIONS:
            raise BadArgument(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        super().__init__(name, path, threads=threads)
        self.precision = precision
        self._runner: Any = None
        self._folder: Path | None = None

    @property
    def uses_bf16(self) -> bool:
        return precision_hint(self.precision) == "bf16"

    @property
    def vector_precision(self) -> str:
        """What the vectors are computed in: int8, bf16 or fp32 (a new index records it)."""
        return INT8 if self.precision == INT8 else "bf16" if self.uses_bf16 else "fp32"

    def _prepare(self) -> Path:
        if self.precision == INT8:
            folder = quantized(self.path, self.fingerprint())
        else:
            folder = converted(self.path, "encoder", self.fingerprint())
        self._runner = Runner(compile_ir(folder, self.precision, threads=self.threads))
        self._folder = folder
        return folder

    def _load(self) -> None:
        super()._load()
        try:
            verify(self._folder, self._runner, self.precision, self._tokenizer)
        except BaseException:
            self._tokenizer = self._runner = None  # the next call loads, and is checked, again
            raise

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Unit vectors, (len(texts), dim): batches of similar length (at most `batch_size` texts and about
        ENCODER_TOKENS word pieces), each padded to its longest (rounded up to PAD_TO), one per stream at a time."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size < 1:
            raise BadArgument(f"batch size must be > 0, got {batch_size}")
        rows = self.input_ids(list(texts))
        batches = length_batches([len(r) for r in rows], batch_size, ENCODER_TOKENS)
        inputs = [padded([rows[j] for j in idx], pad_to=ENCODER_PAD_TO) for idx in batches]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cls = self.meta["pooling"] == "cls"

        def pool(i: int, outputs: list[np.ndarray]) -> None:
            hidden, mask = outputs[0], inputs[i]["attention_mask"]  # (b, t, dim), (b, t)
            if cls:
                v = hidden[:, 0]
            else:
                v = mean_pool(hidden, mask)  # (b, dim)
            out[batches[i]] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

        self._runner.run(inputs, pool)
        return out


@dataclass
class Compiled:
    """A model's runner and the tokenizer that feeds it: what `model` gives for the reranker and the reader."""

    runner: Runner
    tokenizer: Pieces
    device: str = "cpu"


def _limit(path: Path) -> int:
    """The longest input the model at `path` reads: its position embeddings and tokenizer limit, at most 512."""
    limits = [MAX_LENGTH_CAP]
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("max_position_embeddings"):
        limits.append(int(config["max_position_embeddings"]))
    for name, key in (("tokenizer_config.json", "model_max_length"), ("sentence_bert_config.json", "max_seq_length")):
        f = path / name
        value = json.loads(f.read_text(encoding="utf-8")).get(key) if f.is_file() else None
        if isinstance(value, int) and value > 0:
            limits.append(value)
    return min(limits)


class OpenVINOReranker(CrossEncoderReranker):
    """`CrossEncoderReranker` on OpenVINO: the same windows, the same raw logits (to bfloat16's precision)."""

    def __init__(self, name: str, path: Path, **kwargs: Any) -> None:
        _check_device(kwargs.get("device"))
        super().__init__(name, path, **kwargs)

    @property
    def uses_bf16(self) -> bool:
        return precision_hint(self.precision) == "bf16"

    @property
    def model(self) -> Compiled:
        if self._model is None:
            folder = converted(self.path, "reranker", self.fingerprint())
            tokenizer = Pieces(folder / "tokenizer.json")
            self._settle(_limit(self.path), tokenizer)
            log.info("loading reranker %s on OpenVINO from %s", self.name, folder)
            self._model = Compiled(Runner(compile_ir(folder, self.precision)), tokenizer)
        return self._model

    def _logits(self, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        model = self.model
        enc = model.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first",
                              max_length=self.max_length)
        batches = length_batches([len(r) for r in enc["input_ids"]], batch_size, QUERY_TOKENS)
        inputs = [padded([enc["input_ids"][j] for j in idx], [enc["token_type_ids"][j] for j in idx]) for idx in batches]
        out = np.zeros(len(pairs), dtype=np.float32)

        def keep(i: int, outputs: list[np.ndarray]) -> None:
            out[batches[i]] = outputs[0].reshape(len(batches[i]), -1)[:, 0]  # (b,)

        model.runner.run(inputs, keep)
        return out


class OpenVINOReader(ExtractiveReader):
    """`ExtractiveReader` on OpenVINO: the same windows and spans, no torch."""

    def __init__(self, name: str, path: Path, **kwargs: Any) -> None:
        _check_device(kwargs.get("device"))
        super().__init__(name, path, **kwargs)
        self._folder: Path | None = None

    def _converted(self) -> Path:
        if self._folder is None:
            self._folder = converted(self.path, "reader", self.fingerprint())
        return self._folder

    @property
    def uses_bf16(self) -> bool:
        return precision_hint(self.precision) == "bf16"

    @property
    def tokenizer(self) -> Pieces:
        if self._tokenizer is None:
            self._tokenizer = Pieces(self._converted() / "tokenizer.json")
        return self._tokenizer

    @property
    def model(self) -> Compiled:
        if self._model is None:
            log.info("loading reader %s on OpenVINO from %s", self.name, self._converted())
            self._model = Compiled(Runner(compile_ir(self._converted(), self.precision)), self.tokenizer)
        return self._model

    def _logits(self, enc: Any, batch_size: int) -> Any:
        """Yields (window, start logits, end logits) per window, batching windows of similar length."""
        batches = length_batches([len(r) for r in enc["input_ids"]], batch_size, QUERY_TOKENS)
        inputs = [padded([enc["input_ids"][w] for w in idx], [enc["token_type_ids"][w] for w in idx]) for idx in batches]
        for idx, (start, end) in zip(batches, self.model.runner.outputs(inputs)):
            for row, w in enumerate(idx.tolist()):
                n = len(enc["input_ids"][w])  # padding is on the right
                yield w, start[row, :n], end[row, :n]
