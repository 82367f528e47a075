"""Every `vlprompt` command line in README.md and docs/ uses only flags the command has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vlprompt.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(path: Path) -> list[str]:
    """The `vlprompt ...` lines of the file's bash blocks, continuation lines joined."""
    text = path.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            match = re.search(r"(?:^|-m vlprompt\.cli |\| )vlprompt(?:\.cli)? (.*)$", line)
            if line.startswith(("vlprompt ", "torchrun ")) and match:
                out.append(match.group(1))
    return out


CASES = [(p.name, c) for p in DOCS for c in _commands(p)]


def test_the_docs_hold_commands_to_check():
    names = {name for name, _ in CASES}
    assert {"README.md", "reproduce.md"} <= names and len(CASES) > 20


@pytest.mark.parametrize(("doc", "command"), CASES, ids=[f"{d}:{c[:50]}" for d, c in CASES])
def test_every_flag_in_the_docs_exists(doc, command):
    words = shlex.split(command.replace("$", ""))
    parser = build_parser(words)
    sub = parser._subparsers._group_actions[0].choices[words[0]]  # noqa: SLF001
    if words[0] == "mini":
        sub = sub._subparsers._group_actions[0].choices[words[1]]  # noqa: SLF001
    known = set(sub._option_string_actions)  # noqa: SLF001
    flags = {w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-" and w != "..."}
    assert flags <= known, f"{doc}: `vlprompt {command}` uses unknown {sorted(flags - known)}"
