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
    if not s["lr"] > 0:
        raise BadArgument(f"lr must be positive, not {s['lr']}")
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
    return dict(
        output_dir=str(checkpoints),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        eval_strategy=strategy if best_metric is not None else "no",
        save_strategy=strategy,
        eval_steps=eval_steps,
        save_steps=eval_steps if eval_steps is not None else 500,
        save_total_limit=2,
        load_best_model_at_end=best_metric is not None,
        metric_for_best_model=best_metric,
        greater_is_better=True,
        logging_steps=max(1, min(50, steps_per_epoch // 10)),
        use_cpu=not cuda,
        bf16=bf16,
        seed=seed,
        report_to="none",
        disable_tqdm=True,
    )


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def check_same_run(
    checkpoints: Path, settings: dict[str, Any], resumable: Collection[str], absent: dict[str, Any] | None = None
) -> None:
    """A checkpoint resumes only the run that wrote it: other data or optimizer settings would not fit it.
    `absent` gives the value a setting had in runs recorded before the setting existed."""
    try:
        before = json.loads((checkpoints / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    before = {**(absent or {}), **before}
    changed = sorted(k for k in settings if k not in resumable and before.get(k) != settings[k])
    if changed:
        was = ", ".join(f"{k}={before.get(k)!r} (now {settings[k]!r})" for k in changed)
        raise BadArgument(
            f"the checkpoints in {checkpoints} come from a run with other settings: {was}; "
            "use the same settings (only --epochs and the dev options may change), or pass --no-resume to start over"
        )


def resume_point(
    checkpoints: Path,
    settings: dict[str, Any],
    resumable: Collection[str],
    *,
    resume: bool,
    absent: dict[str, Any] | None = None,
) -> str | None:
    """The checkpoint to resume from (the latest in `checkpoints`), or None to start afresh.

    Without `resume`, old checkpoints are deleted; with it, they must come from the same run (see
    `check_same_run` for `absent`).
    """
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is not None and not resume:
        log.warning("not resuming: deleting the checkpoints in %s", checkpoints)
        shutil.rmtree(checkpoints)
        return None
    if last is not None:
        check_same_run(checkpoints, settings, resumable, absent)
        log.info("resuming from %s", last)
    return last


def step_of(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0


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
