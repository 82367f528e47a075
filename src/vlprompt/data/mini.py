"""The mini-world data sets (`mini_*`), registered like the benchmarks.

On first use a data set's images are rendered to PNG files (deterministic, a few seconds) under
`<root>/mini/v<world version>/<name>/` when a root is given, else `$VLPROMPT_MINI_ROOT/v<version>/`,
else `~/.cache/vlprompt/mini/v<version>/`; later uses only read the split file. From there on
everything goes through the normal file-based path (`Datum`s, `ImageListDataset`, transforms).
Each folder holds `split_mini.json` in the CoOp split layout (`{"train": [[relpath, label,
classname], ...], ...}`), written last, so a folder without it is incomplete and is re-rendered.
Style-shifted variants (`mini_shapes_sketch`, ...) are test-only copies of the test split re-drawn
in another style, registered with `variant_of` for the `dg` protocol.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from vlprompt.data.registry import register_dataset
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError
from vlprompt.io import atomic_write_json
from vlprompt.mini.datasets import MINI_DATASETS, SPLITS, MiniDatasetSpec
from vlprompt.mini.world import WORLD_VERSION

SPLIT_FILE = "split_mini.json"
SPEC_FILE = "spec_mini.json"  # what the images were drawn from; a change re-renders them
ENV_ROOT = "VLPROMPT_MINI_ROOT"


def mini_root(root: str | Path | None = None) -> Path:
    """The folder that holds the rendered mini data sets of this world version."""
    version = f"v{WORLD_VERSION}"
    if root is not None:
        return Path(root).expanduser() / "mini" / version
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser() / version
    return Path.home() / ".cache" / "vlprompt" / "mini" / version


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def _render(spec: MiniDatasetSpec, folder: Path, style: str | None) -> dict:
    """Draw every image of `spec` (only the test split for a style variant) under `folder`."""
    table: dict[str, list] = {}
    splits = ("test",) if style else SPLITS
    for split in SPLITS:
        table[split] = []
        if split not in splits:
            continue
        for label, classname in enumerate(spec.classnames):
            sub = Path(split) / f"{label:02d}_{_slug(classname)}"
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for i in range(spec.per_class[split]):
                rel = sub / f"{i:03d}.png"
                spec.item(split, label, i, style=style).save(folder / rel, optimize=False)
                table[split].append([rel.as_posix(), label, classname])
    return table


def spec_record(spec: MiniDatasetSpec, style: str | None) -> dict:
    """Everything a data set's images are drawn from, besides the world's code (whose changes
    bump WORLD_VERSION): a folder rendered from another record is re-rendered."""
    return json.loads(json.dumps({"spec": asdict(spec), "style": style}))


def _is_current(folder: Path, record: dict) -> bool:
    if not (folder / SPLIT_FILE).is_file():
        return False
    try:
        return json.loads((folder / SPEC_FILE).read_text()) == record
    except (OSError, ValueError):
        return False


def materialize(name: str, root: str | Path | None = None, style: str | None = None) -> Path:
    """Render data set `name` (or its `style` variant) once; return its folder. A folder
    rendered from an older definition of the data set is rendered again."""
    spec = MINI_DATASETS[name]
    record = spec_record(spec, style)
    base = mini_root(root)
    folder = base / (f"{name}_{style}" if style else name)
    if _is_current(folder, record):
        return folder
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{folder.name}."))
    except OSError as exc:
        raise DataError(
            f"cannot write the mini data sets under {base} ({exc}); pass a writable root or set "
            f"{ENV_ROOT}"
        ) from exc
    try:
        table = _render(spec, tmp, style)
        atomic_write_json(tmp / SPEC_FILE, record)
        atomic_write_json(tmp / SPLIT_FILE, table)
        if _is_current(folder, record):  # another process finished first: use its copy
            return folder
        if folder.exists():  # an incomplete earlier attempt, or an older definition
            shutil.rmtree(folder)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            if not _is_current(folder, record):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_mini(name: str, root: Path | None = None, style: str | None = None) -> DatasetSplits:
    """The full mini data set `name` (style variant: test split only, `extra["test_only"]`)."""
    spec = MINI_DATASETS[name]
    folder = materialize(name, root, style)
    try:
        table = json.loads((folder / SPLIT_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{folder / SPLIT_FILE}: unreadable ({exc}); delete {folder} to re-render it"
        ) from exc
    items = {
        split: [Datum(str(folder / rel), int(label), cls) for rel, label, cls in table[split]]
        for split in SPLITS
    }
    extra = {"dataset_dir": str(folder), "world_version": WORLD_VERSION, "generated": True}
    if style:
        extra |= {"test_only": True, "style": style}
    return DatasetSplits(
        name=f"{name}_{style}" if style else name,
        classnames=list(spec.classnames),
        train=items["train"],
        val=items["val"],
        test=items["test"],
        template=spec.template,
        extra=extra,
    )


def _register(spec: MiniDatasetSpec) -> None:
    def loader(root: Path | None, **_) -> DatasetSplits:
        return load_mini(spec.name, root)

    sizes = spec.per_class
    register_dataset(
        spec.name,
        template=spec.template,
        description=(
            f"mini world: {spec.description}; {len(spec.classnames)} classes, "
            f"{sizes['train']}/{sizes['val']}/{sizes['test']} images per class"
        ),
    )(loader)
    for style in spec.variants:

        def variant_loader(root: Path | None, _style: str = style, **_) -> DatasetSplits:
            return load_mini(spec.name, root, style=_style)

        register_dataset(
            f"{spec.name}_{style}",
            template=spec.template,
            variant_of=spec.name,
            description=f"mini world: the test split of {spec.name} drawn as {style} (test only)",
        )(variant_loader)


for _spec in MINI_DATASETS.values():
    _register(_spec)
