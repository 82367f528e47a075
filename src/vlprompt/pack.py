"""A run as one file to share: `vlprompt pack RUN -o run.vlprompt`.

The bundle is a zip of what predicting needs and nothing of the backbone: `config.json`,
`method.json`, `prompts.safetensors`, `status.json`, `calibration.json` and `splits.json` when
the run has them, and `pack.json` (format, code version, and the backbone's weights: an open_clip
tag as it is, a local weight file by its name and sha256, never by a path of the machine that
trained it). Loading (`vlprompt.load_run("run.vlprompt", pretrained=PATH)`, CLI `--pretrained
PATH`) unpacks the known names only into a temporary folder and checks the weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from vlprompt._version import code_version
from vlprompt.errors import FolderError, RunError
from vlprompt.run_folder import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    METHOD_FILE,
    PROMPTS_FILE,
    SPLITS_FILE,
    STATUS_FILE,
    is_run_finished,
    not_writable,
    read_config_data,
)

PACK_FORMAT = "vlprompt-pack/1"
MANIFEST = "pack.json"
REQUIRED = (CONFIG_FILE, METHOD_FILE, PROMPTS_FILE, STATUS_FILE)
OPTIONAL = (CALIBRATION_FILE, SPLITS_FILE)
MAX_MEMBER_BYTES = 2 * 2**30  # a bundle member larger than this is not a run's


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_bundle(path: str | Path) -> bool:
    return Path(path).is_file() and zipfile.is_zipfile(path)


def pack_run(run_dir: str | Path, output: str | Path) -> Path:
    """Write the bundle of a finished run to `output` (a new file; an existing one is refused:
    it may be the user's)."""
    run_dir, output = Path(run_dir), Path(output).expanduser()
    config = read_config_data(run_dir)
    if not is_run_finished(run_dir):
        raise RunError(
            f"{run_dir} holds no finished run (no status.json saying so); finish it first"
        )
    if output.is_dir():
        raise RunError(
            f"{output} is a folder; give the bundle a file name, e.g. "
            f"{output / (run_dir.name + '.vlprompt')}"
        )
    if output.exists() or output.is_symlink():
        raise RunError(f"{output} exists; choose a new file name for the bundle")
    _check_bundle_folder(output)
    missing = [n for n in REQUIRED if not (run_dir / n).is_file()]
    if missing:
        raise RunError(f"{run_dir} lacks {', '.join(missing)}: not a whole run; train it again")
    manifest = {"format": PACK_FORMAT, "vlprompt_version": code_version(),
                "backbone": config.get("backbone"), "weights": _weights_record(config)}  # fmt: skip
    config = {**config, "pretrained": _portable_pretrained(config)}
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as exc:  # a read-only folder, a full disk
        raise not_writable(output.parent, exc, "the bundle's folder") from None
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
            bundle.writestr(CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True))
            for name in (*REQUIRED[1:], *OPTIONAL):
                if (run_dir / name).is_file():
                    bundle.write(run_dir / name, name)
        os.replace(tmp, output)
    except OSError as exc:  # e.g. the disk filled up: the error would name the temp file
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is not None and Path(exc.filename).parent != output.parent:
            raise  # reading the run, not writing the bundle
        raise not_writable(output.parent, exc, "the bundle's folder") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


def _check_bundle_folder(output: Path) -> None:
    """FolderError when a path above `output` is a file (the bundle cannot go under it)."""
    for above in output.parents:
        if above.exists():
            if not above.is_dir():
                raise FolderError(
                    f"cannot write the bundle {output}: {above} is a file, not a folder; choose "
                    "another path for the bundle"
                )
            return


def _weights_record(config: dict[str, Any]) -> dict[str, Any] | None:
    pretrained = config.get("pretrained")
    if pretrained is None:
        return None
    path = Path(pretrained)
    if path.is_file():
        return {"file": path.name, "sha256": sha256_of(path)}
    return {"tag": pretrained}


def _portable_pretrained(config: dict[str, Any]) -> str | None:
    """A local weight file by its name only (no path of the training machine)."""
    pretrained = config.get("pretrained")
    return Path(pretrained).name if pretrained and Path(pretrained).is_file() else pretrained


def unpack(bundle: str | Path, into: str | Path) -> dict[str, Any]:
    """Extract the bundle's known members into the folder `into`; return its manifest."""
    bundle, into = Path(bundle), Path(into)
    try:
        archive = zipfile.ZipFile(bundle)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RunError(f"{bundle} is not a readable vlprompt bundle ({exc})") from None
    with archive:
        names = set(archive.namelist())
        try:
            manifest = json.loads(archive.read(MANIFEST)) if MANIFEST in names else None
        except (ValueError, KeyError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
            raise RunError(
                f"{bundle} is not a vlprompt bundle ({MANIFEST} missing or of another format)"
            )
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise RunError(f"{bundle} lacks {', '.join(missing)}; pack the run again")
        for name in (*REQUIRED, *OPTIONAL):
            if name in names:
                if archive.getinfo(name).file_size > MAX_MEMBER_BYTES:
                    raise RunError(f"{bundle}: {name} is too large for a run's file")
                (into / name).write_bytes(archive.read(name))
    return manifest


def resolve_weights(manifest: dict[str, Any], pretrained: str | Path | None, bundle: Path) -> Any:
    """The `pretrained` to load a bundle's backbone with: its tag, or the local file the caller
    names (checked against the recorded sha256)."""
    weights = manifest.get("weights")
    if weights is None or "tag" in weights:
        return pretrained if pretrained is not None else (weights or {}).get("tag")
    if pretrained is None:
        raise RunError(
            f"{bundle} was trained on the local weight file {weights['file']} (sha256 "
            f"{weights['sha256'][:12]}...); pass its path with --pretrained PATH "
            "(load_run(..., pretrained=PATH))"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise RunError(f"--pretrained {path} is not a file; give the path of {weights['file']}")
    found = sha256_of(path)
    if found != weights["sha256"]:
        raise RunError(
            f"--pretrained {path} is not the weight file the run was trained on (sha256 "
            f"{found[:12]}..., expected {weights['sha256'][:12]}... of {weights['file']})"
        )
    return str(path.resolve())
