"""The mini-world data sets (`mini_*`), registered like the benchmarks.

On first use a data set's images are rendered to PNG files (deterministic, a few seconds) under
`<root>/mini/v<world version>/<name>/` when a root is given, else `$VLPROMPT_MINI_ROOT/v<version>/`,
else `~/.cache/vlprompt/mini/v<version>/`; later uses only read the split file. From there on
everything goes through the normal file-based path (`Datum`s, `ImageListDataset`, transforms).
Each folder holds `split_mini.json` in the CoOp split layout (`{"train": [[relpath, label,
classname], ...], ...}`), written last, so a folder without it is incomplete and is re-rendered.
These folders are vlprompt's own cache: one whose split file is not a valid table of the data set
(e.g. edited by hand) is re-rendered too. A render writes into a hidden temp folder named
`.<name>.render-<host>-<pid>-<random>` and renames it into place; temp folders of renders that died
(their process is gone) are removed by the next render under the same root.
Style-shifted variants (`mini_shapes_sketch`, ...) are test-only copies of the test split re-drawn
in another style, registered with `variant_of` for the `dg` protocol.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from vlprompt.data.registry import register_dataset
from vlprompt.data.splits import leaves_folder
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError
from vlprompt.io import atomic_write_json
from vlprompt.mini.datasets import MINI_DATASETS, SPLITS, MiniDatasetSpec
from vlprompt.mini.world import WORLD_VERSION

SPLIT_FILE = "split_mini.json"
SPEC_FILE = "spec_mini.json"  # what the images were drawn from; a change re-renders them
ENV_ROOT = "VLPROMPT_MINI_ROOT"
TEMP_MARK = ".render-"
# A temp folder of another host (whose PIDs cannot be checked from here) is stale only after this
# long; a render takes seconds to minutes.
STALE_TEMP_AGE_S = 24 * 3600
_TEMP_NAME = re.compile(
    r"^\..+" + re.escape(TEMP_MARK) + r"(?P<host>[A-Za-z0-9._-]+)-(?P<pid>[0-9]{1,10})-[a-z0-9_]+$"
)


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


def _read_table(folder: Path, classnames: tuple[str, ...] | list[str]) -> dict | None:
    """The split file of a rendered folder, or None when it is missing or not a valid table:
    train/val/test lists of [relpath inside the folder, label, that label's class name]."""
    try:
        table = json.loads((folder / SPLIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(table, dict):
        return None
    for split in SPLITS:
        part = table.get(split)
        if not isinstance(part, list):
            return None
        for entry in part:
            if not (isinstance(entry, list) and len(entry) == 3):
                return None
            rel, label, classname = entry
            if not (
                isinstance(rel, str)
                and rel
                and not leaves_folder(rel)
                and type(label) is int  # not bool
                and 0 <= label < len(classnames)
                and classname == classnames[label]
            ):
                return None
    return table


def _is_current(folder: Path, record: dict) -> bool:
    """Rendered from `record`, with a valid split file. The folder is vlprompt's own cache, so
    anything else (an older definition, a hand-edited or truncated split file) is re-rendered."""
    try:
        if json.loads((folder / SPEC_FILE).read_text()) != record:
            return False
    except (OSError, ValueError, RecursionError):
        return False
    return _read_table(folder, record["spec"]["classnames"]) is not None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "localhost"


def temp_prefix(folder_name: str, pid: int | None = None) -> str:
    """How the temp folder of a render of `folder_name` by process `pid` (default: this one)
    starts: `.<name>.render-<host>-<pid>-`; mkdtemp adds a random tail."""
    return f".{folder_name}{TEMP_MARK}{_host()}-{os.getpid() if pid is None else pid}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OverflowError:  # no process has such a PID
        return False
    return True


def remove_stale_temp_folders(base: Path) -> list[Path]:
    """Remove the temp folders under `base` that renders which died left behind; return them.

    Only folders of vlprompt's own naming (`temp_prefix`) are touched. One made on this host is
    stale when its process is gone: the folder of a live render (another process, or another
    thread of this one) is never removed, and a PID reused since only keeps a dead folder longer.
    One made on another host sharing the folder, or on Windows (where os.kill(pid, 0) would end
    the process), is stale after STALE_TEMP_AGE_S.
    """
    try:
        entries = list(os.scandir(base))
    except OSError:
        return []
    host, now, removed = _host(), time.time(), []
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        if match["host"] == host and os.name != "nt":
            stale = not _process_alive(int(match["pid"]))
        else:
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def materialize(name: str, root: str | Path | None = None, style: str | None = None) -> Path:
    """Render data set `name` (or its `style` variant) once; return its folder. A folder
    rendered from an older definition of the data set, or whose split file is not a valid table
    of it, is rendered again (it is vlprompt's own cache). Temp folders of dead renders under the
    same root are removed first (`remove_stale_temp_folders`)."""
    spec = MINI_DATASETS[name]
    record = spec_record(spec, style)
    base = mini_root(root)
    folder = base / (f"{name}_{style}" if style else name)
    if _is_current(folder, record):
        return folder
    try:
        base.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_folders(base)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=temp_prefix(folder.name)))
    except OSError as exc:
        raise DataError(
            f"cannot write the mini data sets under {base} ({exc}); pass a writable root or set "
            f"{ENV_ROOT}"
        ) from exc
    try:
        _render_into(spec, record, style, tmp, folder)
    except OSError as exc:
        raise DataError(
            f"cannot render the mini data set {folder.name} under {base} ({exc}); free some "
            f"space, or pass another writable root or set {ENV_ROOT}"
        ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _render_into(spec: MiniDatasetSpec, record: dict, style: str | None, tmp: Path, folder: Path):
    """Render into `tmp`, then rename it to `folder` unless another process finished first."""
    table = _render(spec, tmp, style)
    atomic_write_json(tmp / SPEC_FILE, record)
    atomic_write_json(tmp / SPLIT_FILE, table)
    if _is_current(folder, record):  # another process finished first: use its copy
        return
    if folder.exists():  # an incomplete earlier attempt, an older definition or a broken split
        shutil.rmtree(folder)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its copy
        if not _is_current(folder, record):
            raise


def load_mini(name: str, root: Path | None = None, style: str | None = None) -> DatasetSplits:
    """The full mini data set `name` (style variant: test split only, `extra["test_only"]`)."""
    spec = MINI_DATASETS[name]
    folder = materialize(name, root, style)
    table = _read_table(folder, spec.classnames)
    if table is None:  # changed since materialize checked it (another process, or by hand)
        raise DataError(
            f"{folder / SPLIT_FILE} is not a valid split of {name}: delete {folder} and load the "
            "data set again to re-render it"
        )
    items = {
        split: [Datum(str(folder / rel), label, cls) for rel, label, cls in table[split]]
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
