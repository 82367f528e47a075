"""A trained run beside zero-shot CLIP on the same images: the baseline it must beat.

A run that ends below zero-shot CLIP (or below chance) learned something wrong, and the usual
causes are few: the papers' random crop on the mini world's 64-px scenes, a learning rate far
from the method's, too few optimizer steps. `zero_shot_note` writes the words shown beside the
accuracy in `vlprompt train`'s last line and in each line of a sweep, with the likely cause
where one is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FEW_STEPS = 50  # fewer optimizer steps than this: named as a likely cause
LR_FACTOR = 10.0  # a learning rate this far from the method's default: named as a likely cause


def zero_shot_note(record: dict[str, Any], config: Any = None, status: dict | None = None,
                   percent: str = "%") -> str | None:  # fmt: skip
    """The words "zero-shot 75.33%", with ": BELOW zero-shot; likely cause: ..." when the run
    is below it (or ": BELOW chance (...)" below 1 / classes); None when the record has no zero-shot
    accuracy (zero-shot CLIP itself, or an evaluation on other classes than the run's own).
    `config` (RunConfig) and `status` (status.json) name the likely cause when known."""
    zero_shot = record.get("zero_shot_accuracy")
    if zero_shot is None:
        return None
    accuracy = float(record["accuracy"])
    text = f"zero-shot {zero_shot:.2f}{percent}"
    n_classes = record.get("n_classes") or 0
    chance = 100.0 / n_classes if n_classes else 0.0
    if accuracy < chance:
        text += f": BELOW chance (1/{n_classes} = {chance:.2f}{percent})"
    elif accuracy < zero_shot:
        text += ": BELOW zero-shot"
    else:
        return text
    cause = likely_cause(config, status) if config is not None else None
    return text + (f"; likely cause: {cause}" if cause else "; compare the settings with the "
                   "method's preset (`vlprompt presets`)")  # fmt: skip


def likely_cause(config: Any, status: dict | None = None) -> str | None:
    """The known causes that fit the run's config, in words (None: none fits)."""
    causes = []
    mini = config.dataset.startswith("mini_") or config.backbone == _tiny_clip_name()
    if mini and config.engine.crop_min_scale < 1:
        causes.append(
            f"the papers' random crop (crop_min_scale {config.engine.crop_min_scale:g}) on the "
            "mini world's 64-px scenes, which cuts the object out; the mini settings have none "
            "(--preset mini)"
        )
    lr = config.method_config.get("lr")
    recipe_lr, whose = _recipe_lr(config)
    if lr and recipe_lr and max(lr / recipe_lr, recipe_lr / lr) >= LR_FACTOR:
        causes.append(f"the learning rate {lr:g} ({whose}: {recipe_lr:g})")
    steps = _optimizer_steps(config, status or {})
    if steps is not None and 0 < steps < FEW_STEPS:
        causes.append(f"only {steps} optimizer step{'s' if steps > 1 else ''}")
    return "; ".join(causes) or None


def note_of_run_dir(record: dict[str, Any], percent: str = "%") -> str | None:
    """`zero_shot_note` with the config and status read from the record's `run_dir`."""
    if record.get("zero_shot_accuracy") is None:
        return None
    config = status = None
    run_dir = record.get("run_dir")
    if run_dir and (Path(run_dir) / "config.json").is_file():
        from vlprompt.config import read_run_config
        from vlprompt.run_folder import read_status

        config, status = read_run_config(run_dir), read_status(run_dir)
    return zero_shot_note(record, config, status, percent=percent)


def _optimizer_steps(config: Any, status: dict[str, Any]) -> int | None:
    if status.get("iterations"):
        return int(status["iterations"])
    epochs, n_images = status.get("epochs"), status.get("n_train_images")
    batch = config.method_config.get("batch_size")
    if not (epochs and n_images and batch):
        return None
    from vlprompt.training_cost import steps_per_epoch  # the engine loader's count

    return int(epochs) * steps_per_epoch(int(n_images), int(batch))


def _recipe_lr(config: Any) -> tuple[float | None, str]:
    """The learning rate the run's recipe names and whose it is: its preset's (e.g. the mini
    world's lr chosen on validation) where the preset sets one, else the method's default."""
    from vlprompt.errors import PresetError
    from vlprompt.presets import resolve_preset

    try:
        preset_lr = resolve_preset(config.preset, config.method, config.dataset,
                                   config.shots).get("lr")  # fmt: skip
    except PresetError:  # a preset of an older version: the method's default is the reference
        preset_lr = None
    if preset_lr is not None:
        return float(preset_lr), f"the {config.preset} preset's"
    return getattr(_default_config(config.method), "lr", None), "the method's default"


def _default_config(method: str) -> Any:
    from vlprompt.methods import get_method_class

    try:
        return get_method_class(method).config_class()
    except ValueError:
        return None


def _tiny_clip_name() -> str:
    from vlprompt.mini.settings import TINY_CLIP_NAME

    return TINY_CLIP_NAME
