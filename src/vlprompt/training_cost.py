"""What a method's training costs, in counts that hold on any machine: optimizer steps, epochs
and images through the image tower, for a task of a given size; and, where a method's paper
recipe is long for a CPU, the shorter setting to try there.

A recipe counted in epochs scales with the data; one counted in optimizer steps does not.
CLIP-LoRA's official 500 x shots iterations are 8,000 steps of 32 images at 16 shots whatever
the class count: 80 epochs of 100 classes, but 1,600 epochs of 10 classes. `vlprompt methods`
prints these counts for two reference tasks, and a run on the CPU whose recipe is paper-sized
says so in its first lines, with the shorter setting (`cpu_setting`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vlprompt.schedule import planned_epochs, total_steps

# the tasks `vlprompt methods` prices every recipe on: (shots, classes)
REFERENCE_TASKS = ((16, 10), (16, 100))
# a recipe of more epochs than this on a reference task is paper-sized for a CPU: a method with
# such a recipe must name a shorter setting (`CPU_SETTINGS`; tests/test_training_cost.py)
LONG_EPOCHS = 500

# Per method: the setting to try on a CPU, and why that value. Plain data (no torch).
CPU_SETTINGS: dict[str, tuple[dict[str, Any], str]] = {
    "clip_lora": (
        {"iterations": 500},
        "the mini world trains it with 480: docs/mini-world.md; the paper's 500 x shots suits "
        "a GPU",
    ),
    "two_stage": (
        {"iterations": 300},
        "the mini world trains it with 288: docs/mini-world.md; the paper's 300 x shots suits a "
        "GPU",
    ),
}


@dataclass(frozen=True)
class TrainingCost:
    """One training's length on `images` training images."""

    images: int
    steps: int  # optimizer steps
    epochs: int
    batch_size: int
    image_backward: bool  # each step also back-propagates through the image tower

    @property
    def image_passes(self) -> int:
        """Images through the image tower over the whole training."""
        return self.steps * self.batch_size

    def describe(self) -> str:
        passes = f"{self.image_passes:,} images through the image tower"
        if self.image_backward:
            passes += ", forward and backward"
        return f"{self.steps:,} steps = {self.epochs:,} epochs of {self.images:,} images, {passes}"


def steps_per_epoch(images: int, batch_size: int) -> int:
    """The engine's loader: full batches only (Dassl's drop_last), or one short batch when the
    training set is smaller than a batch."""
    return max(images // batch_size, 1)


def training_cost(method_class: Any, config: Any, images: int) -> TrainingCost:
    """The length of `config`'s training (a method config of `method_class`) on `images`
    training images."""
    per_epoch = steps_per_epoch(images, config.batch_size)
    return TrainingCost(
        images=images, steps=total_steps(config, per_epoch),
        epochs=planned_epochs(config, per_epoch), batch_size=config.batch_size,
        image_backward=not method_class.frozen_image_encoder,
    )  # fmt: skip


def reference_costs(method_class: Any, config: Any) -> list[tuple[int, int, TrainingCost]]:
    """(shots, classes, cost) for each reference task."""
    return [
        (shots, classes, training_cost(method_class, config, shots * classes))
        for shots, classes in REFERENCE_TASKS
    ]


def cpu_setting(method: str) -> tuple[dict[str, Any], str] | None:
    """The shorter setting to try on a CPU and why, for a method whose paper recipe is long."""
    return CPU_SETTINGS.get(method)


def _flags(setting: dict[str, Any]) -> str:
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in setting.items())


def long_recipe_note(method: str, method_class: Any, config: Any, images: int) -> str | None:
    """One line for a run whose training is longer than its method's CPU setting would make it
    on the same `images` (None for every other run): what to pass on a CPU."""
    found = cpu_setting(method)
    if found is None:
        return None
    setting, why = found
    cost = training_cost(method_class, config, images)
    shorter = training_cost(method_class, replace(config, **setting), images)
    if cost.steps <= shorter.steps:
        return None
    return (
        f"{method}: {cost.steps:,} steps ({cost.epochs:,} epochs) is its paper recipe, long on a "
        f"CPU: try {_flags(setting)} ({shorter.steps:,} steps; {why})"
    )


def methods_cost_lines(method: str, method_class: Any, config: Any) -> list[str]:
    """The cost lines of one method in `vlprompt methods`."""
    lines = [
        f"    {shots} shots x {classes} classes: {cost.describe()}"
        for shots, classes, cost in reference_costs(method_class, config)
    ]
    found = cpu_setting(method)
    if found is not None:
        setting, why = found
        lines.append(f"    long on a CPU: try {_flags(setting)} ({why})")
    return lines
