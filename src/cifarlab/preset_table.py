"""The presets as `cifarlab presets` lists them: parameter counts, the seed's accuracy and, with details, the recipe."""

from __future__ import annotations

from cifarlab.config import TrainConfig
from cifarlab.models import count_params
from cifarlab.presets import Preset, get_preset, list_presets
from cifarlab.transfer import preset_model


def preset_table(pattern: str | None = None, details: bool = False) -> str:
    """One line per preset matching `pattern` (model, Keras-style parameter counts, seed's accuracy, summary).

    With `details`, each preset's optimiser, epochs, batch, split, augmentation, transfer set-up and the choices
    made where the seed is silent follow its line. Raises ValueError when no preset matches.
    """
    names = list_presets(pattern)
    if not names:
        raise ValueError(f"no preset matches '{pattern}' (see 'cifarlab presets')")
    width = max(11, *(len(name) for name in names))
    columns = f"{'model':<10} {'total':>11} {'trainable':>11} {'non-train.':>10} {'seed acc.':>9}  recipe"
    lines = [f"{'preset':<{width}} {columns}"]
    for name in names:
        preset = get_preset(name)
        counts = count_params(preset_model(preset.config))  # a transfer preset: its frozen backbone is non-trainable
        seed_acc = f"{preset.seed_accuracy:.2f}" if preset.seed_accuracy is not None else "-"
        lines.append(
            f"{name:<{width}} {preset.config.model:<10} {counts.total:>11,} {counts.trainable:>11,} "
            f"{counts.non_trainable:>10,} {seed_acc:>9}  {preset.summary}"
        )
        if details:
            lines += _details(preset)
    return "\n".join(lines)


def _details(preset: Preset) -> list[str]:
    recipe = preset.config.train
    optimizer = {
        "adam": f"adam lr {recipe.lr:g} (epsilon {recipe.adam_epsilon:g})",
        "sgd": f"sgd lr {recipe.lr:g} (momentum {recipe.momentum:g})",
        "muon": f"muon lr {recipe.muon_lr:g} on conv filters, sgd lr {recipe.lr:g} on the rest",
    }[recipe.optimizer]
    if recipe.low_res_epochs:
        optimizer += f", first {recipe.low_res_epochs} epochs at {recipe.low_res_size}px"
    if recipe.whiten_bias_epochs:
        optimizer += f", whitening bias frozen after {recipe.whiten_bias_epochs} epochs"
    steps = f", {recipe.steps_per_epoch} steps/epoch" if recipe.steps_per_epoch else ""
    lines = [
        f"    recipe: {optimizer}, {recipe.epochs} epochs, batch {recipe.batch_size}{steps}, "
        f"val split {_val_split(preset.config.data.val_size)}, inputs {preset.config.data.normalize}"
    ]
    if recipe.checkpoint_best or recipe.early_stopping:
        lines.append(f"    callbacks: {_callbacks(recipe)}")
    if recipe.augment.enabled:
        lines.append(f"    augmentation: {recipe.augment.to_dict()}")
    transfer = preset.config.transfer
    if transfer.backbone is not None:
        tuned = f"last {transfer.finetune} blocks fine-tuned (lr x{transfer.backbone_lr_scale:g})"
        lines.append(
            f"    transfer: backbone {transfer.backbone} {preset.config.model} (inputs scaled as its weights "
            f"expect), {tuned if transfer.finetune else 'frozen (features cached)'}, input size "
            f"{transfer.input_size or 'as loaded'}, head {list(transfer.head)} + Linear, dropout "
            f"{transfer.head_dropout:g}"
        )
    lines += [f"    - {choice}" for choice in preset.choices]
    return lines


def _callbacks(recipe: TrainConfig) -> str:
    """What a recipe's callbacks do, from its settings: the checkpoint, each early stop, the weights tested."""
    parts = ["checkpoint of the best val_accuracy"] if recipe.checkpoint_best else []
    if recipe.early_stopping:
        kept = "best weights restored" if recipe.restore_best_weights else "last weights kept"
        delta = f", min_delta {recipe.min_delta:g}" if recipe.min_delta else ""
        parts.append(f"early stopping on {' and on '.join(recipe.early_stopping)} (patience {recipe.patience}"
                     f"{delta}, {kept})")  # fmt: skip
    checkpoint = recipe.test_weights == "checkpoint" and recipe.checkpoint_best
    tested = "the checkpoint's weights" if checkpoint else "the weights in memory at the end"
    return "; ".join(parts) + f"; tested on {tested}"


def _val_split(val_size: int | float) -> str:
    """'20 % of train' for a fraction, the count otherwise."""
    return f"{100 * val_size:g} % of train" if isinstance(val_size, float) else str(val_size)
