"""How additive is a CLIP's text tower? Measured on the mini world's vocabulary.

    python benchmarks/mini_text_additivity.py [--model NAME --model-config JSON --pretrained CKPT]

A learned prompt context (CoOp) can only change the words around a class name. If the text
feature of "<framing> <class>" is the feature of the framing plus the feature of the class, a
shared context amounts to one vector added to every class embedding, and has little to learn.

Two two-way decompositions of the normalised text features (sum of squares around the grand
mean, split into row effect + column effect + interaction, like a two-way ANOVA):
- **attribute pairs**: "a photo of a {attribute} {shape}." over every colour / pattern / size
  word x every shape. The share *not* explained by the two main effects is how much the two
  words interact.
- **framing x class**: every framing the world's captions use (each style's prefixes and none)
  x mini_objects' 16 class names. The interaction share is how much a framing changes one class's
  feature differently from another's: the room a learned context has.

Prints one table row per model: the shipped tiny CLIP (or the given one) and the same
architecture untrained (random init, seed 0) for reference.
"""

from __future__ import annotations

import argparse

import torch


def two_way_shares(features: torch.Tensor) -> tuple[float, float, float]:
    """Shares (rows, columns, interaction) of the sum of squares of `features` [R, C, D] around
    its grand mean; they add up to 1."""
    grand = features.mean(dim=(0, 1), keepdim=True)
    rows = features.mean(dim=1, keepdim=True) - grand
    cols = features.mean(dim=0, keepdim=True) - grand
    residual = features - grand - rows - cols
    total = (features - grand).pow(2).sum()
    n_rows, n_cols = features.shape[:2]
    row_ss = rows.pow(2).sum() * n_cols
    col_ss = cols.pow(2).sum() * n_rows
    return float(row_ss / total), float(col_ss / total), float(residual.pow(2).sum() / total)


@torch.no_grad()
def text_grid(clip, texts: list[list[str]]) -> torch.Tensor:
    """Normalised text features [R, C, D] of a grid of prompts."""
    flat = [t for row in texts for t in row]
    feats = clip.encode_text(clip.tokenize(flat), normalize=True)
    return feats.reshape(len(texts), len(texts[0]), -1)


def measure(clip) -> dict[str, float]:
    from vlprompt.mini import world
    from vlprompt.mini.datasets import MINI_DATASETS

    shapes = world.SHAPES
    pairs = {"colour x shape": tuple(world.COLORS), "pattern x shape": world.PATTERNS,
             "size x shape": world.SIZES}  # fmt: skip
    result = {}
    for label, words in pairs.items():
        grid = [[f"a photo of a {w} {s}." for s in shapes] for w in words]
        result[label] = two_way_shares(text_grid(clip, grid))[2]
    framings = [""] + sorted({p for ps in world.STYLE_PREFIXES.values() for p in ps if p})
    classes = MINI_DATASETS["mini_objects"].classnames
    grid = [[f"{f}{'a ' if f else ''}{c}." for c in classes] for f in framings]
    result["framing"], result["class"], result["framing x class"] = two_way_shares(
        text_grid(clip, grid)
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--model-config", default=None)
    parser.add_argument("--pretrained", default=None)
    args = parser.parse_args()

    import open_clip

    from vlprompt.backbone import load_clip
    from vlprompt.mini import MODEL_NAME, checkpoint_path

    if args.model_config:
        open_clip.add_model_config(args.model_config)
    model = args.model or MODEL_NAME
    torch.manual_seed(0)
    clips = {
        f"{model}, untrained": load_clip(model),
        f"{model}, pre-trained": load_clip(
            model, pretrained=str(args.pretrained or checkpoint_path())
        ),
    }
    rows = {name: measure(clip) for name, clip in clips.items()}
    columns = list(next(iter(rows.values())))
    print("Interaction share of the attribute pairs; framing / class / interaction shares of "
          "framing x class (percent of the sum of squares)\n")  # fmt: skip
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * values[c]:.1f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
