"""What the training commands share: argument checks, resuming only the same run, and the report's machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..errors import BadArgument
from ..evaluation.beir import ProgressFactory

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
"""The settings of the run that wrote a checkpoints folder, so that a resume can check them."""


def check_settings(s: dict[str, Any]) -> None:
    """Ranges every trainer shares: positive sizes and rates, warmup in [0, 1), stride within half a window."""
    for name in ("epochs", "batch_size", "max_length"):
        if s[name] < 1:
            raise BadArgument(f"{name} must be at least 1, not {s[name]}")
    check_lr(s["lr"])
    for name in ("weight_decay", "max_grad_norm"):  # (nan passed click's range, and trained the weights to NaN)
        if name in s and not (isinstance(s[name], (int, float)) and 0 <= s[name] < float("inf")):
            raise BadArgument(f"{name} must be a number >= 0, not {s[name]!r}")
    if not 0 <= s["warmup_ratio"] < 1:
        raise BadArgument(f"warmup_ratio must be in [0, 1), not {s['warmup_ratio']}")
    if not 0 <= s["stride"] <= s["max_length"] // 2:
        raise BadArgument(f"stride must be in [0, max_length / 2], not {s['stride']} (max_length {s['max_length']})")
    if s["layer_lr_decay"] is not None and not 0 < s["layer_lr_decay"] <= 1:
        raise BadArgument(f"layer_lr_decay must be in (0, 1], not {s['layer_lr_decay']}")
    for name in ("limit", "dev_limit", "eval_steps"):
        if s[name] is not None and s[name] < 1:
            raise BadArgument(f"{name} must be at least 1, not {s[name]}")
    if s.get("time_limit") is not None and not s["time_limit"] > 0:
        raise BadArgument(f"time_limit must be a positive number of minutes, not {s['time_limit']}")


MAX_LR = 1e-2
"""The highest peak learning rate a trainer takes: BERT fine-tuning uses 2e-5 to 5e-5, and a rate past this is a typo
(--lr 3e5 for 3e-5 trained the weights to NaN and saved them, exit 0; found 2026-12-06)."""


def check_lr(lr: float) -> None:
    import math

    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise BadArgument(f"lr must be a positive number up to {MAX_LR:g}, not {lr!r}: BERT fine-tuning uses 2e-5 to "
                          "5e-5 (a rate much higher makes the weights diverge)")


def check_finite(model: Any, what: str) -> None:
    """Refuses to go on with a model whose weights are not all finite: training diverged (a learning rate too high,
    or a broken batch), and the model saved would score everything NaN. Nothing is saved; the checkpoints are left."""
    import torch

    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise BadArgument(f"training diverged: {len(bad)} of the {what}'s weight tensors hold NaN or infinity "
                          f"({bad[0]}, ...), so nothing was saved; train again with a lower --lr (2e-5 to 5e-5 is "
                          "usual) and --no-resume")


FEW_STEPS = 10
"""Fewer optimizer steps than this get a warning: too few to move the model much (see `warmup_steps`)."""


def warmup_steps(ratio: float, total: int) -> int:
    """The linear warmup's length in steps: `ratio` of `total`, rounded down. transformers rounds a ratio up, and its
    warmup runs the first step at a learning rate of 0, so a run of one step changed nothing and saved the base
    model as trained (found 2026-12-06): rounded down, a run of fewer than 1/ratio steps has no warmup, and its first
    step learns. A run with fewer than FEW_STEPS steps is warned about."""
    if total < FEW_STEPS:
        log.warning("only %d optimizer step%s in this run: too few to change the model much; more examples, more "
                    "--epochs or a smaller --batch-size give it more", total, "" if total == 1 else "s")
    return int(ratio * total)


def schedule_args(
    *,
    checkpoints: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    warmup_ratio: float,
    weight_decay: float,
    max_grad_norm: float,
    eval_steps: int | None,
    best_metric: str | None,
    steps_per_epoch: int,
    cuda: bool,
    bf16: bool,
    seed: int,
) -> dict[str, Any]:
    """The (transformers or sentence-transformers) TrainingArguments both trainers share: AdamW with
    linear warmup and decay, clipping, evaluation and a checkpoint every epoch (or every `eval_steps`),
    the best checkpoint kept by `best_metric` (no evaluation when it is None)."""
    strategy = "steps" if eval_steps is not None else "epoch"
    return {
        "output_dir": str(checkpoints),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "learning_rate": lr,
        "lr_scheduler_type": "linear",
        "warmup_steps": warmup_steps(warmup_ratio, steps_per_epoch * epochs),
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "eval_strategy": strategy if best_metric is not None else "no",
        "save_strategy": strategy,
        "eval_steps": eval_steps,
        "save_steps": eval_steps if eval_steps is not None else 500,
        "save_total_limit": 2,
        "load_best_model_at_end": best_metric is not None,
        "metric_for_best_model": best_metric,
        "greater_is_better": True,
        "logging_steps": max(1, min(50, steps_per_epoch // 10)),
        "use_cpu": not cuda,
        "bf16": bf16,
        "seed": seed,
        "report_to": "none",
        "disable_tqdm": True,
    }


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


RESUME_FIX = "use the same settings (only --epochs and the dev options may change), or pass --no-resume to start over"


def check_same_run(
    checkpoints: Path,
    settings: dict[str, Any],
    resumable: Collection[str],
    absent: dict[str, Any] | None = None,
    *,
    fix: str = RESUME_FIX,
) -> None:
    """A checkpoint resumes only the run that wrote it: other data or optimizer settings would not fit it.
    `absent` gives the value a setting had in runs recorded before the setting existed; `fix` ends the
    error's message, saying what the user can do instead."""
    try:
        before = json.loads((checkpoints / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    before = {**(absent or {}), **before}
    changed = sorted(k for k in settings if k not in resumable and before.get(k) != settings[k])
    if changed:
        was = ", ".join(f"{k}={before.get(k)!r} (now {settings[k]!r})" for k in changed)
        raise BadArgument(f"the checkpoints in {checkpoints} come from a run with other settings: {was}; {fix}")


def refuse_index_folder(out_dir: Path) -> None:
    if (out_dir / "store.db").exists():
        raise BadArgument(f"{out_dir} is an index folder: a model saved there would overwrite its config.json; give "
                          "--out a folder of its own (for example models/NAME)")


def check_out(out_dir: Path, *, resume: bool) -> None:
    """Refuses an `out_dir` where the model to be saved would break or replace something: an index folder (a model's
    config.json would overwrite the index's), or a model saved there before, unless `resume` is False (--no-resume:
    start over, and replace it). A run with checkpoints to resume from goes on."""
    from transformers.trainer_utils import get_last_checkpoint

    refuse_index_folder(out_dir)
    checkpoints = out_dir / "checkpoints"
    if checkpoints.is_dir() and get_last_checkpoint(str(checkpoints)) is not None:
        return
    model = [p.name for p in out_dir.glob("*") if p.name in ("config.json", "modules.json") or p.suffix == ".safetensors"]
    if model and resume:
        raise BadArgument(f"{out_dir} already holds a model ({', '.join(sorted(model))}), which this run would replace; "
                          "give --out another folder, or add --no-resume to train again from the start and replace it")
    if model:
        log.warning("replacing the model in %s (--no-resume)", out_dir)


def resume_point(
    checkpoints: Path,
    settings: dict[str, Any],
    resumable: Collection[str],
    *,
    resume: bool,
    absent: dict[str, Any] | None = None,
    fix: str = RESUME_FIX,
) -> str | None:
    """The checkpoint to resume from (the latest in `checkpoints`), or None to start afresh.

    Without `resume`, old checkpoints are deleted; with it, they must come from the same run (see
    `check_same_run` for `absent` and `fix`).
    """
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is not None and not resume:
        log.warning("not resuming: deleting the checkpoints in %s", checkpoints)
        shutil.rmtree(checkpoints)
        return None
    if last is not None:
        check_same_run(checkpoints, settings, resumable, absent, fix=fix)
        log.info("resuming from %s", last)
    return last


def step_of(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0


def run_trainer(trainer: Any, checkpoints: Path, settings: dict[str, Any], last: str | None) -> tuple[Any, float]:
    """Run `trainer` from checkpoint `last` (None: from the start), with `settings` written beside the checkpoints
    first, so that a later resume can check that it goes on with the same run (`check_same_run`). Returns the
    trainer's output and the seconds training took."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(checkpoints / RUN_FILE, settings)
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    check_finite(trainer.model, "model")
    return output, time.perf_counter() - t0


def training_summary(
    trainer: Any, output: Any, *, seconds: float, resumed_from: str | None, stopper: Any
) -> dict[str, Any]:
    """The report's account of training: steps done and planned, whether the time limit (`stopper`, a
    `time_limit_callback`) ended it, time per step since `resumed_from`, and the final training loss."""
    steps = trainer.state.global_step
    return {
        "steps": steps,
        "planned_steps": trainer.state.max_steps,
        "stopped_by_time_limit": stopper.stopped_at is not None,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, steps - step_of(resumed_from)), 3),
        "train_loss": output.training_loss,
    }


def finish(out_dir: Path, report: dict[str, Any], card: str, *, keep: bool, work: tuple[Path, ...]) -> None:
    """report.json and the model card (README.md) into `out_dir`; the `work` folders (checkpoints, caches)
    deleted unless `keep`, or unless the time limit stopped the run: the same command resumes it from them."""
    write_json(out_dir / "report.json", report)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    if not keep and not report["stopped_by_time_limit"]:
        for folder in work:
            shutil.rmtree(folder, ignore_errors=True)


def save_weights(model: Any, out_dir: Path, *, half: bool = True, **save_kwargs: Any) -> str:
    """Save `model` with its `save_pretrained` into `out_dir`: as float16 safetensors (half the size) unless
    `half` is False, readable by all, under a config.json that says float32, so that the weights load back as
    float32 for CPU inference. `half` converts `model` in place. Returns the dtype the weights were written in."""
    if half:
        model.half()
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), **save_kwargs)
    for f in out_dir.glob("*.safetensors"):
        f.chmod(0o644)  # written through a private temporary file; a shipped model must be readable by all
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    config.pop("torch_dtype", None)
    config["dtype"] = "float32"
    write_json(out_dir / "config.json", config)
    return dtype


def dev_metrics(values: dict[str, Any], keys: dict[str, str], name: str = "") -> dict[str, float]:
    """The metrics `keys` (the evaluator's key -> the report's name), rounded to 4 places, out of an evaluator's
    result or a trainer's log, where the evaluator's `name` (and in the log "eval_") comes before each key."""
    prefixes = (f"eval_{name}_", f"{name}_") if name else ("eval_", "")
    out = {}
    for key, short in keys.items():
        for prefix in prefixes:
            if prefix + key in values:
                out[short] = round(float(values[prefix + key]), 4)
                break
    return out


def per_evaluation(history: list[dict[str, Any]], keys: dict[str, str], name: str = "") -> list[dict[str, Any]]:
    """Epoch, step and the `dev_metrics` of each evaluation in a trainer's log history."""
    return [{"epoch": h.get("epoch"), "step": h.get("step"), **m} for h in history if (m := dev_metrics(h, keys, name))]


def machine() -> dict[str, Any]:
    import sentence_transformers
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # what the run used: fewer than cpus when pinned
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def progress_callback(progress: ProgressFactory) -> Any:
    """A TrainerCallback that advances a progress bar per step and sends the trainer's logs (loss, learning
    rate, dev scores) to the logging module, never to stdout, which carries data."""
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        def __init__(self) -> None:
            self.stack = ExitStack()
            self.advance: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.advance = self.stack.enter_context(progress("training", state.max_steps, "steps"))
            if state.global_step:
                self.advance(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.advance(1)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (logs or {}).items())
            log.info("step %d/%d: %s", state.global_step, state.max_steps, shown)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.stack.close()

    return Report()


def stopped_note(report: dict[str, Any]) -> str:
    """A model card's sentence for a run its time limit ended early ("" for one that ran to the end)."""
    if not report.get("stopped_by_time_limit"):
        return ""
    return (
        f" Training stopped at its time limit after {report['steps']} of {report['planned_steps']} planned steps"
        " (the learning rate had not decayed to zero); its checkpoints were kept, and the same command resumes it."
    )


def time_limit_callback(minutes: float | None) -> Any:
    """A TrainerCallback that ends training at the first step after `minutes` of it (in this process), with
    an evaluation and a checkpoint at that step: the best checkpoint is still the one kept, and running the
    same command again resumes the schedule from there. Its `stopped_at` is that step, or None."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def __init__(self) -> None:
            self.seconds = None if minutes is None else 60.0 * minutes
            self.start = 0.0
            self.stopped_at: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if self.seconds is None or self.stopped_at is not None or state.global_step >= state.max_steps:
                return control
            if time.monotonic() - self.start >= self.seconds:
                self.stopped_at = state.global_step
                log.warning(
                    "time limit of %g min reached at step %d of %d: evaluating, saving and stopping "
                    "(the same command resumes)", minutes, state.global_step, state.max_steps
                )
                control.should_training_stop = True
                if args.save_strategy != "epoch":  # at an epoch's end, where this stop leads, the trainer does both
                    control.should_save = True
                    control.should_evaluate = args.eval_strategy != "no"
            return control

    return TimeLimit()
