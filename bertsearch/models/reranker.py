"""Cross-encoder reranker: reads a query and a passage together and scores how well the passage answers it.

Scores are the model's raw logits (no sigmoid): higher is more relevant. Their gaps matter too: the
engine's rerank order subtracts a penalty in logits per first-stage place (`Index.rerank_penalty`, chosen
on the shipped model's scale). A passage that does not fit the model's window with the query is never cut: it is split into
windows of word pieces that overlap by `stride` pieces, each window is scored, and the passage scores
the best of its windows. All windows of all passages go through the model in one batched call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadArgument, BadQuery, ModelNotFound
from .base import fingerprint_dir

log = logging.getLogger(__name__)

SETTINGS_FILE = "bertsearch.json"
"""Written next to trained weights: {"max_length": ..., "stride": ...}, the window the model was trained for."""
DEFAULT_STRIDE = 64
MAX_LENGTH_CAP = 512
PACKAGED = Path(__file__).resolve().parent.parent / "weights" / "reranker"
TRAIN_HINT = (
    "train one with 'bertsearch train reranker --train ../shared/data/squad/train-v1.1.json --out models/reranker' "
    "or pass --reranker PATH_OR_ID"
)

Span = tuple[int, int]


def window_spans(tokenizer: Any, passages: list[str], budgets: list[int], stride: int) -> list[list[Span]]:
    """Character spans of each passage's windows of at most `budgets[i]` word pieces.

    A passage that fits is one window, (0, len(passage)). A longer one gets windows that together cover
    every word piece, each sharing at least min(stride, budget // 2) pieces with the one before; a window
    starts at the first piece of a word where it can, so that its text re-tokenizes to the same pieces.
    """
    if not passages:
        return []
    enc = tokenizer(
        passages, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False, verbose=False
    )
    out: list[list[Span]] = []
    for i, (text, budget) in enumerate(zip(passages, budgets)):
        offsets = enc["offset_mapping"][i]
        n = len(offsets)
        if budget < 1:
            raise ValueError(f"window budget must be at least 1 word piece, got {budget}")
        if n <= budget:
            out.append([(0, len(text))])
            continue
        words = enc.word_ids(i)
        overlap = min(stride, budget // 2)
        spans: list[Span] = []
        start = 0
        while True:
            end = min(start + budget, n)
            spans.append((int(offsets[start][0]), int(offsets[end - 1][1])))
            if end == n:
                break
            nxt = end - overlap
            while nxt > start + 1 and words[nxt] is not None and words[nxt - 1] == words[nxt]:
                nxt -= 1  # back to the word's first piece: more overlap, never a gap
            start = nxt
        out.append(spans)
    return out


def fit_queries(tokenizer: Any, queries: list[str], max_length: int) -> tuple[list[str], list[int], int]:
    """Each query, cut when it would leave its passages less than half of `max_length`; the word pieces left
    beside it for a passage; and how many queries were cut (each one is logged as a warning)."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    q_cap = room - room // 2
    enc = tokenizer(
        queries, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False, verbose=False
    )
    fitted: list[str] = []
    budgets: list[int] = []
    cut = 0
    for q, offsets in zip(queries, enc["offset_mapping"]):
        if len(offsets) > q_cap:
            cut += 1
            log.warning("query of %d word pieces cut to %d so that passages keep half of the %d-piece window",
                        len(offsets), q_cap, max_length)
            q = q[: offsets[q_cap - 1][1]]
        fitted.append(q)
        budgets.append(room - min(len(offsets), q_cap))
    return fitted, budgets, cut


class CrossEncoderReranker:
    """`name` is what results record; `path` is the local folder the weights load from (lazily).

    `max_length` (word pieces per model input, query included) and `stride` (overlap between windows of
    a long passage) default to the folder's bertsearch.json, else to the model's own limit (at most 512)
    and 64.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        device: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        precision: str = "auto",
    ) -> None:
        from .sentence import PRECISIONS

        if precision not in PRECISIONS:
            raise BadArgument(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        if max_length is not None and not 16 <= max_length <= MAX_LENGTH_CAP:
            raise BadArgument(f"reranker max_length must be in [16, {MAX_LENGTH_CAP}], got {max_length}")
        if stride is not None and stride < 0:
            raise BadArgument(f"reranker stride must be >= 0, got {stride}")
        self.name = name
        self.path = Path(path)
        self.device = device
        self._max_length = max_length
        self._stride = stride
        self._model: Any = None
        self._fingerprint: str | None = None
        self.cut_queries = 0
        """Queries cut so that passages keep half of the window (logged as warnings)."""

    # -- loading ----------------------------------------------------------------------------------

    @property
    def uses_bf16(self) -> bool:
        """bfloat16 autocast: asked for, or "auto" on a CPU (not a GPU) that runs it natively (as the reader's)."""
        from .sentence import uses_bf16

        return uses_bf16(self.model.device, self.precision)

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from sentence_transformers import CrossEncoder

            log.info("loading reranker %s from %s", self.name, self.path)
            model = CrossEncoder(
                str(self.path), device=self.device, local_files_only=True, model_kwargs={"dtype": torch.float32}
            )
            self._settle(_model_limit(model), model.tokenizer)
            model.max_seq_length = self._max_length
            self._model = model
        return self._model

    def _settle(self, limit: int, tokenizer: Any) -> None:
        """Resolve max_length and stride (given, else the folder's bertsearch.json, else the model's own limit and
        DEFAULT_STRIDE) and check them and the tokenizer, as the weights load."""
        settings = _read_settings(self.path)
        max_length = self._max_length if self._max_length is not None else settings.get("max_length", limit)
        stride = self._stride if self._stride is not None else settings.get("stride", DEFAULT_STRIDE)
        if not isinstance(max_length, int) or not 16 <= max_length <= limit:
            raise BadArgument(f"reranker max_length must be in [16, {limit}] for {self.name}, got {max_length}")
        if not isinstance(stride, int) or stride < 0:
            raise BadArgument(f"reranker stride must be a whole number >= 0, got {stride}")
        if not getattr(tokenizer, "is_fast", False):
            raise BadArgument(f"reranker {self.name} has no fast tokenizer (tokenizer.json); windowing needs its offsets")
        self._max_length, self._stride = max_length, stride

    @property
    def max_length(self) -> int:
        """Word pieces per model input, query and special tokens included."""
        self.model  # noqa: B018 - resolves the setting
        return int(self._max_length)  # type: ignore[arg-type]

    @property
    def stride(self) -> int:
        self.model  # noqa: B018
        return int(self._stride)  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """A short hash that changes when the weights change."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_dir(self.path)
        return self._fingerprint

    # -- scoring ----------------------------------------------------------------------------------

    def windows(self, query: str, passages: list[str]) -> list[list[Span]]:
        """Character spans of the windows each passage is scored in (one span when it fits whole)."""
        return self._windows([query], [passages])[1][0]

    def score(self, query: str, passages: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Relevance of each passage to `query`, shape (len(passages),), float32 logits; higher is better."""
        return self.score_batch([query], [passages], batch_size=batch_size)[0]

    def score_batch(
        self, queries: list[str], passages_per_query: Sequence[list[str]], *, batch_size: int = 32
    ) -> list[np.ndarray]:
        """`score` for many queries at once: every window of every passage goes to the model in one call."""
        if batch_size < 1:
            raise BadArgument(f"batch size must be > 0, got {batch_size}")
        queries, spans = self._windows(queries, passages_per_query)
        pairs: list[tuple[str, str]] = []
        owner: list[int] = []  # flat passage index of each window
        flat = 0
        for q, passages, passage_spans in zip(queries, passages_per_query, spans):
            for text, windows in zip(passages, passage_spans):
                pairs.extend((q, text if (a, b) == (0, len(text)) else text[a:b]) for a, b in windows)
                owner.extend([flat] * len(windows))
                flat += 1
        best = np.full(flat, -np.inf, dtype=np.float32)
        if pairs:
            np.maximum.at(best, np.asarray(owner), self._logits(pairs, batch_size))
        out, pos = [], 0
        for passages in passages_per_query:
            out.append(best[pos : pos + len(passages)])
            pos += len(passages)
        return out

    def _logits(self, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        """The model's raw logit for each (query, passage window) pair, shape (len(pairs),), float32."""
        import torch

        from .sentence import autocast

        with autocast(self.model.device, self.precision):
            logits = self.model.predict(
                pairs,
                batch_size=batch_size,
                activation_fn=torch.nn.Identity(),  # raw logits
                convert_to_numpy=True,
                show_progress_bar=False,
            )  # (n_windows,)
        return np.asarray(logits, dtype=np.float32).reshape(-1)

    def _windows(
        self, queries: list[str], passages_per_query: Sequence[list[str]]
    ) -> tuple[list[str], list[list[list[Span]]]]:
        """The queries (cut if one would leave passages less than half the window) and each passage's windows."""
        if isinstance(queries, str) or len(queries) != len(passages_per_query):
            raise BadArgument("score_batch takes a list of queries and one list of passages per query")
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise BadQuery("empty query; give some words to rerank for")
        for passages in passages_per_query:
            if isinstance(passages, str) or any(not isinstance(p, str) for p in passages):
                raise BadArgument("passages must be a list of strings for each query")
        tok = self.model.tokenizer
        fitted, budgets, cut = fit_queries(tok, list(queries), self.max_length)
        self.cut_queries += cut
        flat = [p for passages in passages_per_query for p in passages]
        flat_budgets = [b for b, passages in zip(budgets, passages_per_query) for _ in passages]
        flat_spans = window_spans(tok, flat, flat_budgets, self.stride)
        spans, pos = [], 0
        for passages in passages_per_query:
            spans.append(flat_spans[pos : pos + len(passages)])
            pos += len(passages)
        return fitted, spans


def _model_limit(model: Any) -> int:
    """The longest input the model reads: its position embeddings and tokenizer limit, capped at 512."""
    limits = [MAX_LENGTH_CAP, int(model.max_seq_length)]
    positions = getattr(model.model.config, "max_position_embeddings", None) if model.model is not None else None
    if positions:
        limits.append(int(positions))
    return min(limits)


def _read_settings(path: Path) -> dict[str, Any]:
    f = path / SETTINGS_FILE
    if not f.is_file():
        return {}
    try:
        settings = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadArgument(f"{f} is not valid JSON ({e}); fix it or delete it to use the model's defaults") from None
    if not isinstance(settings, dict):
        raise BadArgument(f"{f} must hold a JSON object such as {{\"max_length\": 256, \"stride\": 64}}")
    return settings


def check_cross_encoder(name: str, path: Path) -> None:
    """Raise a clear error when `path` holds no single-score cross-encoder (e.g. a bi-encoder)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFound(f"reranker {name}: {path} has no config.json, so it is not a transformers model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelNotFound(f"reranker {name}: cannot read {config_file} ({e})") from None
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        what = ", ".join(map(str, architectures)) or "no architecture"
        if (path / "modules.json").is_file() and (path / "1_Pooling").is_dir():
            what += ", a sentence-transformers bi-encoder (embedding model)"
        raise BadArgument(
            f"{name} is not a cross-encoder ({what}); a reranker needs a sequence-classification model with one "
            f"output, such as one made by 'bertsearch train reranker'"
        )
    labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 1)
    if labels != 1:
        raise BadArgument(
            f"{name} is a classifier with {labels} labels; a reranker gives one relevance score per pair (num_labels=1)"
        )


def load_reranker(
    name: str | None = None,
    *,
    device: str | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    precision: str = "auto",
    backend: str = "torch",
) -> CrossEncoderReranker:
    """The cross-encoder named `name`: a folder, a model id in the local cache, or (None) the one shipped
    in the package. Weights load lazily, on the first `score`. `backend`: "torch", or "openvino" (see
    `models.openvino`; no torch needed once the model is converted)."""
    from . import QUERY_BACKENDS, resolve_model_path

    if backend not in QUERY_BACKENDS:
        raise BadArgument(f"unknown reranker backend {backend!r}; use one of {', '.join(QUERY_BACKENDS)}")

    if name is None or name == "default":
        if not (PACKAGED / "config.json").is_file():
            raise ModelNotFound(f"no reranker weights are shipped in this install; {TRAIN_HINT}")
        name, path = "default", PACKAGED
    else:
        try:
            path = resolve_model_path(name)
        except ModelNotFound:
            if Path(name).expanduser().is_dir():
                raise  # a folder that holds no model: its own message says so
            raise ModelNotFound(
                f"reranker {name} is neither a local folder nor in the Hugging Face cache (this machine cannot "
                f"download it); {TRAIN_HINT}"
            ) from None
    check_cross_encoder(name, path)
    if backend == "openvino":
        from .openvino import OpenVINOReranker

        return OpenVINOReranker(name, path, device=device, max_length=max_length, stride=stride, precision=precision)
    return CrossEncoderReranker(name, path, device=device, max_length=max_length, stride=stride, precision=precision)
