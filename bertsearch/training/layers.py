"""Layer-wise learning-rate decay for BERT-style encoders: the head learns at the full rate and each depth
below it at `decay` times the rate of the one above, so that what pre-training learnt in the lower layers
moves least. Shared by the reader and the reranker trainers."""

from __future__ import annotations

import re
from typing import Any

from ..errors import BadArgument

_LAYER = re.compile(r"\.layer\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, 1..num_layers for encoder layers, num_layers + 1 for the head and the rest."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    return 0 if "embeddings" in name else num_layers + 1


def param_groups(
    model: Any, *, lr: float, weight_decay: float, no_decay: set[str], layer_lr_decay: float | None
) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on the parameters named in `no_decay` (biases and LayerNorm); with
    `layer_lr_decay`, a parameter at depth d learns at lr * decay ** (num_layers + 1 - d), so the head gets lr
    and lower layers less. Frozen parameters are included too, so that gradual unfreezing only needs to flip
    requires_grad."""
    num_layers = int(model.config.num_hidden_layers)
    named = list(model.named_parameters())
    if layer_lr_decay is not None and not any(_LAYER.search(name) for name, _ in named):
        raise BadArgument(
            "layer-wise LR decay needs BERT-style parameter names (embeddings, encoder.layer.N); "
            f"the model has none like that (its first is {named[0][0] if named else 'missing'})"
        )
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, p in named:
        depth = layer_depth(name, num_layers)
        group_lr = lr * layer_lr_decay ** (num_layers + 1 - depth) if layer_lr_decay is not None else lr
        decay = 0.0 if name in no_decay else weight_decay
        groups.setdefault((group_lr, decay), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def layer_decay_optimizer(trainer: Any, layer_lr_decay: float | None) -> Any:
    """AdamW over `trainer.model` in `param_groups`, with the trainer's learning rate, weight decay (none where
    the trainer would put none) and betas: what a transformers Trainer's `create_optimizer` would build, with
    the learning rate decayed layer by layer."""
    import torch

    model, args = trainer.model, trainer.args
    groups = param_groups(
        model,
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        no_decay={n for n, _ in model.named_parameters()} - set(trainer.get_decay_parameter_names(model)),
        layer_lr_decay=layer_lr_decay,
    )
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )
