"""Train an extractive reader on SQuAD with the transformers Trainer.

The script reads as numbered steps: model, data, arguments, trainer, train, evaluate, save. Dev scores
are computed the way `bertsearch eval squad` computes them (the reader's own windowing and span choice,
official EM/F1), on the model in memory, after every epoch (or every `eval_steps`); the best checkpoint
by dev F1 is the one saved. Checkpoints go to OUT/checkpoints, so a run stopped on a CPU resumes where it
stopped. The result is a folder any command accepts as a reader: float16 safetensors, the tokenizer,
bertsearch.json (reader settings), report.json and a model card.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

from ..chunking import sentence_starts
from ..errors import BadArgument, CorpusError
from ..evaluation.beir import ProgressFactory, no_progress
from ..evaluation.squad import Example, evaluate_examples, evaluate_squad, load_squad
from .cards import model_card
from .common import (
    check_out,
    check_settings,
    finish,
    machine,
    per_evaluation,
    progress_callback,
    resume_point,
    run_trainer,
    save_weights,
    schedule_args,
    time_limit_callback,
    training_summary,
    write_json,
)
from .layers import layer_decay_optimizer, layer_depth

log = logging.getLogger(__name__)

DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
MAX_ANSWER_TOKENS = 30
# settings a resumed run may change: more epochs, other dev sets, where it writes
_RESUMABLE = {
    "out_dir",
    "epochs",
    "resume",
    "keep_checkpoints",
    "dev_path",
    "dev_limit",
    "v2_dev_path",
    "eval_steps",
    "dataloader_workers",
    "time_limit",
}
# a run recorded before --unanswerable existed trained on the questions alone
_BEFORE_UNANSWERABLE = {"unanswerable": 0.0}


def squad_features(examples: list[Example], tokenizer: Any, *, max_length: int, stride: int) -> list[dict[str, Any]]:
    """Standard SQuAD preprocessing: each (question, context) becomes stride windows of `max_length` word
    pieces, labelled with the answer's first and last token in the window, or [CLS] (0) when the window
    does not hold the whole answer (or the question has none). No padding: the collator pads each batch."""
    enc = tokenizer(
        [ex.question.lstrip() for ex in examples],
        [ex.context for ex in examples],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    features = []
    for w, offsets in enumerate(enc["offset_mapping"]):
        ex = examples[enc["overflow_to_sample_mapping"][w]]
        seq = enc.sequence_ids(w)
        first = seq.index(1)
        last = len(seq) - 1 - seq[::-1].index(1)
        start_tok = end_tok = 0
        if ex.answers and not ex.is_impossible:
            a = ex.answer_starts[0]
            b = a + len(ex.answers[0])
            if offsets[first][0] <= a and offsets[last][1] >= b:
                start_tok, end_tok = first, last
                while start_tok <= last and offsets[start_tok][0] <= a:
                    start_tok += 1
                start_tok -= 1
                while end_tok >= first and offsets[end_tok][1] >= b:
                    end_tok -= 1
                end_tok += 1
        features.append(
            {
                "input_ids": enc["input_ids"][w],
                "attention_mask": enc["attention_mask"][w],
                "token_type_ids": enc["token_type_ids"][w],
                "start_positions": start_tok,
                "end_positions": end_tok,
            }
        )
    return features


def unanswerable_examples(examples: list[Example], fraction: float, *, seed: int) -> tuple[list[Example], dict[str, int]]:
    """Questions paired with a context that cannot answer them, labelled "no answer", for a seeded
    `fraction` of the answerable `examples` (one each), so that the reader learns when to abstain.

    The contexts alternate between two kinds: the question's own paragraph with every sentence that holds
    an answer cut out (the question's words are still around, as in SQuAD 2.0's unanswerable questions),
    and another paragraph of the same article (the kind of passage retrieval hands the reader beside the
    right one). A candidate that still holds an answer's text, ignoring case, is not used; the other kind
    is tried instead. Returns the new examples and how many of each kind were made."""
    rng = random.Random(seed)
    by_article: dict[int, list[tuple[int, str]]] = {}
    for ex in examples:
        paragraphs = by_article.setdefault(ex.article, [])
        if not paragraphs or paragraphs[-1][0] != ex.paragraph:
            paragraphs.append((ex.paragraph, ex.context))
    answerable = [ex for ex in examples if ex.answers and not ex.is_impossible]
    chosen = rng.sample(answerable, round(fraction * len(answerable))) if fraction > 0 else []
    out: list[Example] = []
    made = {"answer_sentences_removed": 0, "other_paragraph": 0}
    for i, ex in enumerate(chosen):
        texts = [a.lower() for a in ex.answers if a.strip()]
        kinds = ("answer_sentences_removed", "other_paragraph")
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            if kind == "answer_sentences_removed":
                paragraph, context = ex.paragraph, _without_answer_sentences(ex)
            else:
                others = [(p, c) for p, c in by_article.get(ex.article, []) if p != ex.paragraph]
                paragraph, context = rng.choice(others) if others else (ex.paragraph, "")
            if context.strip() and not any(t in context.lower() for t in texts):
                out.append(
                    Example(
                        id=f"{ex.id}-unanswerable",
                        question=ex.question,
                        context=context,
                        answers=[],
                        answer_starts=[],
                        is_impossible=True,
                        article=ex.article,
                        paragraph=paragraph,
                    )
                )
                made[kind] += 1
                break
    return out, made


def _without_answer_sentences(ex: Example) -> str:
    """`ex.context` less every sentence that overlaps one of its answers ("" when nothing would be left)."""
    starts = sentence_starts(ex.context)
    bounds = list(zip(starts, [*starts[1:], len(ex.context)]))
    spans = [(a, a + len(t)) for a, t in zip(ex.answer_starts, ex.answers)]
    kept = [ex.context[s:e] for s, e in bounds if not any(a < e and s < b for a, b in spans)]
    return "".join(kept).strip() if len(kept) < len(bounds) else ""


def _trainer_classes() -> tuple[Any, Any]:
    """The Trainer subclass and the unfreezing callback, built on first use so that importing this module stays cheap."""
    from transformers import Trainer, TrainerCallback

    from ..models.reader import ExtractiveReader

    class ReaderTrainer(Trainer):
        """A Trainer whose evaluation is the reader's SQuAD evaluation, and whose optimizer has layer groups."""

        def __init__(
            self,
            *args: Any,
            dev: list[Example],
            reader_settings: dict[str, Any],
            layer_lr_decay: float | None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.dev = dev
            self.reader_settings = reader_settings
            self.layer_lr_decay = layer_lr_decay

        def create_optimizer(self, model: Any = None) -> Any:
            if self.optimizer is None:
                self.optimizer = layer_decay_optimizer(self, self.layer_lr_decay)
            return self.optimizer

        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
        ) -> dict[str, float]:
            model = self.model
            was_training = model.training
            model.eval()
            try:
                reader = ExtractiveReader.wrap(model, self.processing_class, **self.reader_settings)
                result = evaluate_examples(self.dev, reader, batch_size=2 * self.args.per_device_eval_batch_size)
            finally:
                model.train(was_training)
            metrics = {
                f"{metric_key_prefix}_f1": result["f1"],
                f"{metric_key_prefix}_exact_match": result["exact_match"],
                f"{metric_key_prefix}_questions": result["total"],
                f"{metric_key_prefix}_seconds": result["seconds"],
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    class Unfreeze(TrainerCallback):
        """Gradual unfreezing: the head trains from the start; every `every` steps one more encoder layer
        from the top joins it, and the embeddings last. A function of the step, so it survives resuming."""

        def __init__(self, every: int) -> None:
            self.every = every
            self.thawed = -1

        def _apply(self, model: Any, step: int) -> None:
            num_layers = model.config.num_hidden_layers
            thawed = min(step // self.every, num_layers + 1)  # how many depths below the head train
            if thawed == self.thawed:
                return
            self.thawed = thawed
            lowest = num_layers + 1 - thawed
            for name, p in model.named_parameters():
                p.requires_grad_(layer_depth(name, num_layers) >= lowest)
            log.info("step %d: training depths %d..%d (0 = embeddings)", step, lowest, num_layers + 1)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self._apply(model, state.global_step)

        def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self._apply(model, state.global_step)

    return ReaderTrainer, Unfreeze


def train_reader(
    train_path: str | Path,
    out_dir: str | Path,
    *,
    dev_path: str | Path | None = None,
    base: str = DEFAULT_BASE,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 5e-5,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    max_length: int = 384,
    stride: int = 128,
    layer_lr_decay: float | None = None,
    unfreeze_schedule: bool = False,
    bf16: bool = False,
    limit: int | None = None,
    unseen: bool = False,
    dev_limit: int | None = 1000,
    seed: int = 42,
    resume: bool = True,
    eval_steps: int | None = None,
    dataloader_workers: int = 0,
    v2_dev_path: str | Path | None = None,
    keep_checkpoints: bool = False,
    time_limit: float | None = None,
    unanswerable: float = 0.5,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Fine-tune `base` for extractive QA on a SQuAD file; returns the report also written to OUT/report.json.

    `limit` trains on a seeded random sample of that many questions. A `base` that is itself a reader
    bertsearch trained goes on training with its span head; with `unseen`, the questions its stages
    trained on (replayed from its report.json) are left out first, so that it learns from new ones.
    `dev_limit` scores the first that many dev questions. With `v2_dev_path`, the saved reader's
    no-answer threshold is the one that scores best F1 there. Gradual unfreezing finishes by half-way through training.
    `time_limit` (minutes) ends training early, evaluated and checkpointed, so that the same call resumes it.
    `unanswerable` adds, for that fraction of the questions, a copy paired with a context that cannot answer
    it (see `unanswerable_examples`), labelled "no answer".
    """
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k != "progress"}
    import torch
    import transformers
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        TrainingArguments,
    )

    from ..models import resolve_model_path, task_head
    from ..models.reader import SETTINGS_FILE, load_reader

    check_settings(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "warmup_ratio": warmup_ratio,
            "max_length": max_length,
            "stride": stride,
            "layer_lr_decay": layer_lr_decay,
            "limit": limit,
            "dev_limit": dev_limit,
            "eval_steps": eval_steps,
            "time_limit": time_limit,
            "weight_decay": weight_decay,
            "max_grad_norm": max_grad_norm,
        }
    )
    if not 0 <= unanswerable <= 1:
        raise BadArgument(f"unanswerable must be a fraction in [0, 1], not {unanswerable}")
    for p in (train_path, dev_path, v2_dev_path):
        if p is not None and not Path(p).is_file():
            raise CorpusError(f"no such file: {p}")
    if v2_dev_path is not None and not any(ex.is_impossible for ex in load_squad(v2_dev_path)):
        raise BadArgument(f"--v2-dev {v2_dev_path} holds no unanswerable questions (a SQuAD v1.1 file?), so no "
                          "no-answer threshold can be chosen on it; give a SQuAD v2.0 dev file, or --dev for v1.1")
    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    cuda = torch.cuda.is_available()
    check_out(out_dir, resume=resume)
    last = resume_point(checkpoints, settings, _RESUMABLE, resume=resume, absent=_BEFORE_UNANSWERABLE)
    transformers.set_seed(seed)

    # 1. model: the base encoder with a fresh span head (start and end logits per token), or a reader
    #    to go on training (its head kept; its report, when it has one, becomes this one's history)
    base_path = resolve_model_path(base)
    head = task_head(base_path)
    if head is not None and not head[0].endswith("ForQuestionAnswering"):
        raise BadArgument(f"base model {base} is {head[1]} ({head[0]}); a reader starts from a base model such as the "
                          "default, or from a reader to go on training it")
    history_of_base = _stages(base_path)
    tokenizer = AutoTokenizer.from_pretrained(str(base_path), local_files_only=True)
    if not tokenizer.is_fast:
        raise BadArgument(f"base model {base} has no fast tokenizer (tokenizer.json); offsets need one")
    model = AutoModelForQuestionAnswering.from_pretrained(str(base_path), dtype=torch.float32, local_files_only=True)
    if max_length > model.config.max_position_embeddings:
        raise BadArgument(f"max_length {max_length} is more than {base} reads ({model.config.max_position_embeddings})")

    # 2. data: stride windows labelled with answer token positions; long questions cannot be windowed
    examples = load_squad(train_path)
    lost = [ex for ex in examples if ex.answers and not ex.is_impossible and ex.answer_starts[0] < 0]
    if lost:  # (their label would have been "no answer": the first answer's text is nowhere in the context)
        examples = [ex for ex in examples if not (ex.answers and not ex.is_impossible and ex.answer_starts[0] < 0)]
        log.warning("left out %d questions whose answer is not in their context", len(lost))
    if unseen:
        examples = _unseen(examples, history_of_base, base=base, train_path=train_path)
    if limit is not None:
        examples = random.Random(seed).sample(examples, min(limit, len(examples)))
    room = max_length - stride - 4
    q_lengths = [
        len(ids) for ids in tokenizer([ex.question.lstrip() for ex in examples], add_special_tokens=False)["input_ids"]
    ]
    too_long = sum(n > room for n in q_lengths)
    if too_long:
        log.warning(
            "%d questions longer than %d word pieces skipped (raise --max-length or lower --stride)", too_long, room
        )
        examples = [ex for ex, n in zip(examples, q_lengths) if n <= room]
    if not examples:
        raise CorpusError(f"no trainable questions in {train_path}")
    questions = len(examples)
    negatives, made = unanswerable_examples(examples, unanswerable, seed=seed + 1)
    examples = examples + negatives
    train_features: list[dict[str, Any]] = []
    with progress("tokenizing", len(examples), "questions") as advance:
        for i in range(0, len(examples), 1000):
            part = examples[i : i + 1000]
            train_features += squad_features(part, tokenizer, max_length=max_length, stride=stride)
            advance(len(part))
    unanswered = sum(f["start_positions"] == 0 for f in train_features)
    dev = load_squad(dev_path)[:dev_limit] if dev_path is not None else []
    log.info(
        "%d questions -> %d windows (%d without the answer); %d dev questions",
        len(examples),
        len(train_features),
        unanswered,
        len(dev),
    )

    # 3. arguments
    steps_per_epoch = math.ceil(len(train_features) / batch_size)
    args = TrainingArguments(
        **schedule_args(
            checkpoints=checkpoints,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            eval_steps=eval_steps,
            best_metric="f1" if dev else None,
            steps_per_epoch=steps_per_epoch,
            cuda=cuda,
            bf16=bf16,
            seed=seed,
        ),
        train_sampling_strategy="group_by_length",  # batches of similar length: little padding
        dataloader_num_workers=dataloader_workers,
    )

    # 4. trainer
    reader_settings = {
        "max_length": max_length,
        "stride": stride,
        "max_answer_tokens": MAX_ANSWER_TOKENS,
        "precision": "bf16" if bf16 and not cuda else "fp32",
    }
    ReaderTrainer, Unfreeze = _trainer_classes()
    stopper = time_limit_callback(time_limit)
    callbacks = [progress_callback(progress), stopper]
    if unfreeze_schedule:
        total_steps = steps_per_epoch * epochs
        callbacks.append(Unfreeze(max(1, total_steps // (2 * (model.config.num_hidden_layers + 1)))))
    trainer = ReaderTrainer(
        model=model,
        args=args,
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=train_features,
        eval_dataset=dev or None,
        processing_class=tokenizer,
        callbacks=callbacks,
        dev=dev,
        reader_settings=reader_settings,
        layer_lr_decay=layer_lr_decay,
    )
    trainer.remove_callback(PrinterCallback)

    # 5. train, from the latest checkpoint when there is one
    output, train_seconds = run_trainer(trainer, checkpoints, settings, last)
    history = trainer.state.log_history

    # 6. save the best model (float16 weights), the tokenizer and the reader settings
    reader_json = {
        "max_length": max_length,
        "stride": stride,
        "max_answer_tokens": MAX_ANSWER_TOKENS,
        "no_answer_threshold": None,
    }
    save_reader(trainer.model, tokenizer, out_dir, reader_json)

    # 7. evaluate what was saved: dev EM/F1, and the no-answer threshold on SQuAD v2.0
    reader = load_reader(str(out_dir), precision=reader_settings["precision"])
    final = evaluate_examples(dev, reader, batch_size=2 * batch_size) if dev else None
    v2 = None
    if v2_dev_path is not None:
        v2 = evaluate_squad(v2_dev_path, reader, limit=dev_limit, batch_size=2 * batch_size)
        reader_json["no_answer_threshold"] = v2["best_f1_thresh"]
        write_json(out_dir / SETTINGS_FILE, reader_json)

    # 8. report and model card
    report = {
        "model": str(out_dir),
        "base": base,
        "settings": settings,
        "reader": reader_json,
        "resumed_from": last,
        "train_questions": questions,
        "unanswerable_examples": made,
        "train_windows": len(train_features),
        "windows_without_answer": unanswered,
        "skipped_long_questions": too_long,
        **training_summary(trainer, output, seconds=train_seconds, resumed_from=last, stopper=stopper),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "dev_per_evaluation": per_evaluation(history, {"exact_match": "exact_match", "f1": "f1"}),
        "dev": _scores(final),
        "v2_dev": _scores(v2),
        "machine": machine(),
        "command": _command(settings),
        "earlier_stages": history_of_base,
    }
    finish(out_dir, report, _model_card(report), keep=keep_checkpoints, work=(checkpoints,))
    return report


def save_reader(model: Any, tokenizer: Any, out_dir: Path, settings: dict[str, Any]) -> None:
    """A reader folder: float16 safetensors (half the size), a config that says float32 so that the weights
    load back as float32 for CPU inference, the tokenizer, and bertsearch.json."""
    from ..models.reader import SETTINGS_FILE

    save_weights(model, out_dir)
    tokenizer.save_pretrained(str(out_dir))
    write_json(out_dir / SETTINGS_FILE, settings)


def _stages(base_path: Path) -> list[dict[str, Any]]:
    """The training stages of a base that is itself a bertsearch reader, oldest first (empty otherwise)."""
    try:
        before = json.loads((Path(base_path) / "report.json").read_text(encoding="utf-8"))
        stage = {k: before[k] for k in ("base", "command", "train_questions", "train_windows", "steps", "train_seconds")}
        stage.update({k: before["settings"].get(k) for k in ("train_path", "limit", "seed", "unseen")})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    stage["dev"] = before.get("dev")
    return [*before.get("earlier_stages", []), stage]


def _unseen(examples: list[Example], stages: list[dict[str, Any]], *, base: str, train_path: str | Path) -> list[Example]:
    """`examples` less the questions the stages of `base` trained on, found by replaying each stage's
    seeded sample (the same code as below picks them; long questions skipped later do not matter)."""
    if not stages:
        raise BadArgument(
            f"--unseen needs a --base reader that bertsearch trained (with its report.json); {base} has none"
        )
    seen: set[str] = set()
    for st in stages:
        if Path(st["train_path"]).name != Path(train_path).name:
            raise BadArgument(
                f"--unseen: {base} was trained on {st['train_path']}, not {train_path}; "
                "its questions cannot be left out of another file"
            )
        pool = [ex for ex in examples if ex.id not in seen] if st.get("unseen") else examples
        chosen = random.Random(st["seed"]).sample(pool, min(st["limit"], len(pool))) if st["limit"] else pool
        seen.update(ex.id for ex in chosen)
    left = [ex for ex in examples if ex.id not in seen]
    if not left:
        raise BadArgument(f"--unseen: {base} has already trained on every question of {train_path}")
    log.info("%d questions left out (%s trained on them), %d unseen", len(examples) - len(left), base, len(left))
    return left


def _scores(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    keep = (
        "exact_match",
        "f1",
        "total",
        "HasAns_f1",
        "NoAns_f1",
        "best_exact",
        "best_f1",
        "best_f1_thresh",
        "questions_per_second",
    )
    return {
        k: round(v, 4) if isinstance(v, float) and not k.endswith("_thresh") else v
        for k in keep
        if (v := result.get(k)) is not None
    }


def _command(s: dict[str, Any]) -> str:
    """The `bertsearch train reader` command line that reproduces these settings."""
    parts = ["bertsearch train reader", f"--train {s['train_path']}", f"--out {s['out_dir']}", f"--base {s['base']}"]
    for key in ("dev_path", "v2_dev_path"):
        if s[key] is not None:
            parts.append(f"--{'dev' if key == 'dev_path' else 'v2-dev'} {s[key]}")
    for key in (
        "epochs",
        "batch_size",
        "lr",
        "warmup_ratio",
        "weight_decay",
        "max_grad_norm",
        "max_length",
        "stride",
        "layer_lr_decay",
        "limit",
        "dev_limit",
        "seed",
        "eval_steps",
        "time_limit",
    ):
        if s.get(key) is not None:
            parts.append(f"--{key.replace('_', '-')} {s[key]}")
    if s.get("unanswerable") is not None:  # (0 too: it was left out, and the command then made them at 0.5)
        parts.append(f"--unanswerable {s['unanswerable']}")
    for key, flag in (("unfreeze_schedule", "--gradual-unfreeze"), ("bf16", "--bf16"), ("unseen", "--unseen")):
        if s.get(key):
            parts.append(flag)
    return " ".join(parts)


def _unanswerable_line(r: dict[str, Any]) -> str:
    made = r.get("unanswerable_examples") or {}
    if not sum(made.values()):
        return ""
    return (
        f"Beside its questions it trained on {sum(made.values())} copies paired with a context that cannot answer "
        f"them, labelled no answer (`--unanswerable {r['settings']['unanswerable']}`): "
        f"{made.get('answer_sentences_removed', 0)} with the answer's sentences cut out of the paragraph, "
        f"{made.get('other_paragraph', 0)} with another paragraph of the same article."
    )


def _model_card(r: dict[str, Any]) -> str:
    s = r["settings"]
    dev = r["dev"] or {}
    score = (
        f"EM {dev['exact_match']:.1f} / F1 {dev['f1']:.1f} on the first {dev['total']} questions of "
        f"{Path(s['dev_path']).name}"
        if dev
        else "not evaluated (no dev set given)"
    )
    v2 = r["v2_dev"]
    v2_line = (
        f"On {Path(s['v2_dev_path']).name} (first {v2['total']} questions) the best no-answer threshold is "
        f"{v2['best_f1_thresh']:.3f} (best F1 {v2['best_f1']:.1f}); bertsearch.json records it."
        if v2
        else ""
    )
    stages = r.get("earlier_stages") or []
    origin = stages[0]["base"] if stages else r["base"]
    if stages:
        trained = (
            f"in {len(stages) + 1} stages, each going on from the reader the one before saved; this last one on "
            f"{r['train_questions']} questions of {Path(s['train_path']).name}"
            + (" that the earlier stages had not seen" if s.get("unseen") else "")
            + f" ({r['train_windows']} windows of up to {s['max_length']} word pieces with stride {s['stride']})"
        )
        total = sum(st["train_questions"] for st in stages) + r["train_questions"]
        earlier = "\n".join(
            f"| {i} | {st['train_questions']} | {st['steps']} | {st['train_seconds'] / 60:.0f} min | "
            + (f"{st['dev']['exact_match']:.1f} / {st['dev']['f1']:.1f}" if st.get("dev") else "-")
            + " |"
            for i, st in enumerate(stages, 1)
        )
        this = (
            f"| {len(stages) + 1} | {r['train_questions']} | {r['steps']} | {r['train_seconds'] / 60:.0f} min | "
            + (f"{dev['exact_match']:.1f} / {dev['f1']:.1f}" if dev else "-")
            + " |"
        )
        stage_table = (
            f"## Stages\n\n{total} training questions in all"
            + ("" if s.get("unseen") and all(st.get("unseen") for st in stages[1:]) else " (some seen more than once)")
            + ".\n\n"
            "| stage | questions | steps | time | dev EM / F1 after it |\n|---|---|---|---|---|\n"
            f"{earlier}\n{this}\n"
        )
        reproduce = "\n".join(
            f"# stage {i}\n{st['command']}" for i, st in enumerate(stages, 1)
        ) + f"\n# stage {len(stages) + 1} (--base: the folder stage {len(stages)} wrote)\n{r['command']}"
    else:
        trained = (
            f"({Path(s['train_path']).name}, {r['train_questions']} questions, {r['train_windows']} windows of up to\n"
            f"{s['max_length']} word pieces with stride {s['stride']})"
        )
        stage_table = ""
        reproduce = r["command"]
    return model_card(
        r,
        title="Extractive reader for bertsearch",
        tags=["question-answering", "extractive-qa", "bertsearch"],
        base=origin,
        datasets=["squad"],
        card_licence="cc-by-sa-4.0",
        about=f"A span-extraction (start/end logits) head fine-tuned from `{origin}` on SQuAD\n{trained}, with "
        "bertsearch's own training code.",
        score=score,
        notes="\n\n".join(
            p
            for p in (
                v2_line,
                _unanswerable_line(r),
                ("Weights are float16 safetensors; `config.json` says float32 so they load back as float32 for CPU "
                "inference.\n`bertsearch.json` holds the reader settings (window, stride, longest answer, no-answer "
                "threshold)."),
            )
            if p
        ),
        licence="SQuAD (Rajpurkar et al., 2016) is licensed CC BY-SA 4.0; a model trained on it is shared under the "
        "same\nlicence. The base model keeps its own licence.",
        history=stage_table,
        reproduce=reproduce,
    )
