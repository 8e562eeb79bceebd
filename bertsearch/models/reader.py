"""Extractive reader: finds answer spans to a question in passages, with a transformers QA model.

Long passages are read in overlapping windows (`stride` word pieces shared between neighbours), never
cut; each window's best spans are mapped back to character offsets in the passage, so every span keeps
`passage[start:end] == text`. Weights load lazily on first use.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import BadArgument, ModelNotFound
from ..types import Span
from .base import fingerprint_dir

log = logging.getLogger(__name__)

DEFAULT_READER = "default"
DEFAULT_READER_PATH = Path(__file__).resolve().parent.parent / "weights" / "reader"
SETTINGS_FILE = "bertsearch.json"
DEFAULTS: dict[str, Any] = {"max_length": 384, "stride": 128, "max_answer_tokens": 30, "no_answer_threshold": None,
                            "sentence_spans": True}
PRECISIONS = ("auto", "fp32", "bf16")


_SENTENCE_INSIDE = re.compile(r"(?<=[a-z0-9)]{2}[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
"""A sentence end inside a span: a full stop (or ! or ?) after two lower-case letters or digits, space, and a
capital; "U.S. Army", "Dr. Smith" and "3.5 m" are no sentence ends."""


def crosses_sentence(passage: str, start: int, end: int) -> bool:
    """Whether `passage[start:end]` runs from one sentence into the next."""
    return _SENTENCE_INSIDE.search(passage, start, end) is not None


def best_spans(
    start_logits: Any,
    end_logits: Any,
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    max_answer_tokens: int,
    k: int,
) -> list[tuple[int, int, float]]:
    """The `k` best answer spans of one window as `(start_char, end_char, score)`, best first.

    A span starts and ends on passage tokens (`sequence_ids == 1`), ends at or after its start and is at
    most `max_answer_tokens` word pieces long; its score is start logit + end logit. Every such pair is
    scored exactly: a (T, max_answer_tokens) band of start i and end i + d, not the whole (T, T) matrix.
    """
    s = np.asarray(start_logits, dtype=np.float32).reshape(-1)  # (T,)
    e = np.asarray(end_logits, dtype=np.float32).reshape(-1)  # (T,)
    t, n_len = s.shape[0], max_answer_tokens
    in_passage = np.array([sid == 1 for sid in sequence_ids[:t]], dtype=bool)  # (T,)
    e = np.where(in_passage, e, -np.inf)
    e_band = sliding_window_view(np.concatenate([e, np.full(n_len - 1, -np.inf, np.float32)]), n_len)  # (T, L): end i + d
    scores = np.where(in_passage[:, None], s[:, None] + e_band, -np.inf).ravel()  # (T*L,)
    n = min(k, int(np.isfinite(scores).sum()))
    if n <= 0:
        return []
    idx = np.argpartition(-scores, n - 1)[:n]
    idx = idx[np.lexsort((idx, -scores[idx]))]  # best first; a tie goes to the earlier start, then the shorter span
    out = []
    for flat in idx.tolist():
        a, d = divmod(flat, n_len)
        out.append((int(offsets[a][0]), int(offsets[a + d][1]), float(scores[flat])))
    return out


class ExtractiveReader:
    """`name` is how results and reports record the model; `path` is the folder the weights load from.

    Settings not given come from `bertsearch.json` in the model folder (written by `train_reader`),
    else from DEFAULTS. `no_answer_threshold`: abstain when null score - best span score exceeds it.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        device: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        max_answer_tokens: int | None = None,
        no_answer_threshold: float | None = None,
        precision: str = "auto",
    ) -> None:
        self.name = name
        self.path = Path(path)
        saved = _read_settings(self.path)
        self.max_length = int(max_length if max_length is not None else saved.get("max_length", DEFAULTS["max_length"]))
        self.stride = int(stride if stride is not None else saved.get("stride", DEFAULTS["stride"]))
        self.max_answer_tokens = int(
            max_answer_tokens
            if max_answer_tokens is not None
            else saved.get("max_answer_tokens", DEFAULTS["max_answer_tokens"])
        )
        self.sentence_spans = bool(saved.get("sentence_spans", DEFAULTS["sentence_spans"]))  # spans within a sentence
        threshold = no_answer_threshold if no_answer_threshold is not None else saved.get("no_answer_threshold")
        self.no_answer_threshold: float | None = float(threshold) if threshold is not None else None
        if self.max_length < 16:
            raise BadArgument(f"max_length must be at least 16 word pieces, not {self.max_length}")
        if not 0 <= self.stride < self.max_length:
            raise BadArgument(f"stride must be in [0, max_length), not {self.stride} (max_length {self.max_length})")
        if self.max_answer_tokens < 1:
            raise BadArgument(f"max_answer_tokens must be at least 1, not {self.max_answer_tokens}")
        if precision not in PRECISIONS:
            raise BadArgument(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._fingerprint: str | None = None

    @property
    def uses_bf16(self) -> bool:
        """bfloat16 autocast: asked for, or "auto" on a CPU (not a GPU) that runs it natively."""
        from .sentence import uses_bf16

        return uses_bf16(self.model.device, self.precision)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, *, name: str = "in-memory", **settings: Any) -> ExtractiveReader:
        """A reader over a model already in memory (training uses it to evaluate as it goes)."""
        reader = cls(name, Path(getattr(model, "name_or_path", "") or "."), device=str(model.device), **settings)
        reader._model, reader._tokenizer = model, tokenizer
        return reader

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            if not self._tokenizer.is_fast:
                raise ModelNotFound(f"reader {self.name} has no fast tokenizer (tokenizer.json); offsets need one")
        return self._tokenizer

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from transformers import AutoModelForQuestionAnswering

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            log.info("loading reader %s from %s on %s", self.name, self.path, device)
            # float32 whatever the saved dtype: weights ship as float16, which CPUs compute slowly or not at all
            model = AutoModelForQuestionAnswering.from_pretrained(
                str(self.path), dtype=torch.float32, local_files_only=True
            )
            self._model = model.to(device).eval()
        return self._model

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_dir(self.path) if self.path.is_dir() else "in-memory"
        return self._fingerprint

    def abstains(self, spans: list[Span]) -> bool:
        """True when there is no span, or the threshold is set and "no answer" beats the best span by more."""
        if not spans:
            return True
        if self.no_answer_threshold is None:
            return False
        best = spans[0]
        return best.null_score - best.score > self.no_answer_threshold

    def read(
        self, question: str, passages: list[str], *, top_k: int = 5, batch_size: int = 16, per_passage: int | None = None
    ) -> list[Span]:
        return self.read_batch([question], [passages], top_k=top_k, batch_size=batch_size, per_passage=per_passage)[0]

    def read_batch(
        self,
        questions: list[str],
        passages_per_question: list[list[str]],
        *,
        top_k: int = 5,
        batch_size: int = 16,
        per_passage: int | None = None,
    ) -> list[list[Span]]:
        """For each question, its `top_k` best spans over all of its passages, best first; with `per_passage`,
        the best `per_passage` of each passage instead (all of them, for re-ranking across passages)."""
        if len(questions) != len(passages_per_question):
            raise BadArgument(f"{len(questions)} questions but {len(passages_per_question)} lists of passages")
        if top_k < 1 or batch_size < 1 or (per_passage is not None and per_passage < 1):
            raise BadArgument(f"top_k, batch_size and per_passage must be at least 1 (got {top_k}, {batch_size}, {per_passage})")
        questions = [q.strip() for q in questions]
        for q in questions:
            if not q:
                raise BadArgument("empty question; give a question to answer")
        pairs: list[tuple[int, int]] = []  # (question index, passage index)
        for qi, passages in enumerate(passages_per_question):
            for pi, p in enumerate(passages):
                if p.strip():
                    pairs.append((qi, pi))
                else:
                    log.debug("question %d: passage %d is empty (a document of a title alone); skipped", qi, pi)
        results: list[list[Span]] = [[] for _ in questions]
        if not pairs:
            return results
        questions = self._fit_questions(questions)
        enc = self.tokenizer(
            [questions[qi] for qi, _ in pairs],
            [passages_per_question[qi][pi] for qi, pi in pairs],
            truncation="only_second",
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        windows = enc["overflow_to_sample_mapping"]  # window -> pair
        log.debug("read %d passages as %d windows", len(pairs), len(windows))
        found: dict[tuple[int, int], dict[tuple[int, int], float]] = {}  # pair -> (start, end) -> best score
        null: dict[tuple[int, int], float] = {}
        wanted = max(top_k, per_passage or 0)
        for w, start_logits, end_logits in self._logits(enc, batch_size):
            pair = pairs[windows[w]]
            passage = passages_per_question[pair[0]][pair[1]]
            null[pair] = min(null.get(pair, float("inf")), float(start_logits[0] + end_logits[0]))
            spans = found.setdefault(pair, {})
            kept = 0
            for a, b, score in best_spans(  # more than wanted: spans that run across sentences are passed over
                start_logits, end_logits, enc["offset_mapping"][w], enc.sequence_ids(w), self.max_answer_tokens, 4 * wanted
            ):
                if kept == wanted:
                    break
                if self.sentence_spans and crosses_sentence(passage, a, b):
                    continue
                kept += 1
                if score > spans.get((a, b), float("-inf")):
                    spans[(a, b)] = score
        for (qi, pi), spans in found.items():
            passage = passages_per_question[qi][pi]
            best = sorted(spans.items(), key=lambda x: (-x[1], x[0]))[:per_passage] if per_passage else spans.items()
            for (a, b), score in best:
                text = passage[a:b]
                if text.strip():
                    results[qi].append(
                        Span(passage=pi, start=a, end=b, text=text, score=score, null_score=null[(qi, pi)])
                    )
        if per_passage:
            return [sorted(r, key=lambda s: (-s.score, s.passage, s.start)) for r in results]
        return [sorted(r, key=lambda s: (-s.score, s.passage, s.start))[:top_k] for r in results]

    def _fit_questions(self, questions: list[str]) -> list[str]:
        """Each question cut, when it must be, to what a window holds beside some passage: the question,
        3 special tokens and more passage than the stride. A cut is logged as a warning."""
        room = self.max_length - self.stride - 4
        enc = self.tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, verbose=False)
        fitted = []
        for q, offsets in zip(questions, enc["offset_mapping"]):
            if len(offsets) > room:
                log.warning("question of %d word pieces cut to %d, what windows of %d with stride %d hold beside a "
                            "passage", len(offsets), room, self.max_length, self.stride)
                q = q[: offsets[room - 1][1]]
            fitted.append(q)
        return fitted

    def _logits(self, enc: Any, batch_size: int) -> Any:
        """Yields (window, start logits, end logits) per window, batching windows of similar length."""
        import torch

        from .sentence import autocast

        model = self.model
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if model.config.type_vocab_size > 1 else [])
        order = sorted(range(len(enc["input_ids"])), key=lambda w: len(enc["input_ids"][w]))
        with torch.inference_mode(), autocast(model.device, self.precision):
            for i in range(0, len(order), batch_size):
                part = order[i : i + batch_size]
                batch = self.tokenizer.pad({n: [enc[n][w] for w in part] for n in names}, return_tensors="pt")
                out = model(**{n: batch[n].to(model.device) for n in names})
                start = out.start_logits.float().cpu()  # (B, T)
                end = out.end_logits.float().cpu()  # (B, T)
                for row, w in enumerate(part):
                    n = len(enc["input_ids"][w])  # padding is on the right
                    yield w, start[row, :n], end[row, :n]


def _read_settings(path: Path) -> dict[str, Any]:
    f = path / SETTINGS_FILE
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelNotFound(f"{f} is not valid JSON ({e}); fix it or delete it to use the defaults") from None
    return {k: data[k] for k in DEFAULTS if k in data}


def check_reader(name: str, path: Path) -> None:
    """Raise a clear error when `path` holds no extractive reader (a question-answering head): a reranker's or a bare
    encoder's weights would fail deep in the first question, or answer from a head never trained."""
    from . import task_head

    head = task_head(path)
    if head is None or not head[0].endswith("ForQuestionAnswering"):
        what = f"{head[1]} ({head[0]})" if head else "a model without a question-answering head"
        raise BadArgument(f"{name} is {what}, not an extractive reader; --reader needs a question-answering model, "
                          "such as one made by 'bertsearch train reader'")


def load_reader(
    name: str | None = None,
    *,
    device: str | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    max_answer_tokens: int | None = None,
    no_answer_threshold: float | None = None,
    precision: str = "auto",
    backend: str = "torch",
) -> ExtractiveReader:
    """The reader named `name`: a model folder or id, or None for the default shipped in the package.
    `backend`: "torch", or "openvino" (see `models.openvino`; no torch needed once the model is converted)."""
    from . import QUERY_BACKENDS

    if backend not in QUERY_BACKENDS:
        raise BadArgument(f"unknown reader backend {backend!r}; use one of {', '.join(QUERY_BACKENDS)}")
    if name is None or name == DEFAULT_READER:
        if not (DEFAULT_READER_PATH / "config.json").is_file():
            raise ModelNotFound(
                "no reader weights are shipped in this install; train one with 'bertsearch train reader --train "
                "../shared/data/squad/train-v1.1.json --out models/reader' or pass --reader PATH_OR_ID"
            )
        name, path = DEFAULT_READER, DEFAULT_READER_PATH
    else:
        from . import resolve_model_path

        path = resolve_model_path(name)
        check_reader(name, path)
    kind: type[ExtractiveReader] = ExtractiveReader
    if backend == "openvino":
        from .openvino import OpenVINOReader

        kind = OpenVINOReader
    return kind(
        name,
        path,
        device=device,
        max_length=max_length,
        stride=stride,
        max_answer_tokens=max_answer_tokens,
        no_answer_threshold=no_answer_threshold,
        precision=precision,
    )
