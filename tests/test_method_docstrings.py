"""Every built-in method states its departures from the official code in one form: one line
"Departures from the official code, on purpose:" followed by bullets, the first the precision
(what the official code runs in, what vlprompt does)."""

from __future__ import annotations

import sys

import pytest

from vlprompt.methods import get_method_class, list_methods

HEADER = "Departures from the official code, on purpose:"
OWN = [n for n in list_methods() if get_method_class(n).__module__.startswith("vlprompt.")]


def departure_bullets(doc: str | None) -> list[str]:
    """The bullets of the one departures section of `doc`, each joined into one line; a
    ValueError says what is wrong with the section."""
    lines = (doc or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADER]
    if len(starts) != 1:
        raise ValueError(f"{len(starts)} lines {HEADER!r}, expected exactly one")
    others = [
        line.strip()
        for i, line in enumerate(lines)
        if line.lstrip().startswith("Departure") and i != starts[0]
    ]
    if others:
        raise ValueError(f"another departures heading besides {HEADER!r}: {others[0]!r}")
    bullets: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if not line.strip():
            break
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif line.startswith("  ") and bullets:
            bullets[-1] += " " + line.strip()
        else:
            raise ValueError(f"not a bullet ('- ...') or its indented continuation: {line!r}")
    if not bullets:
        raise ValueError(f"no bullets after {HEADER!r}")
    if not bullets[0].startswith("Precision:"):
        raise ValueError(f"the first bullet must start with 'Precision:', got {bullets[0][:40]!r}")
    return bullets


@pytest.mark.parametrize("name", OWN)
def test_method_docstring_states_departures_with_precision_first(name):
    doc = sys.modules[get_method_class(name).__module__].__doc__
    bullets = departure_bullets(doc)
    assert all(bullet for bullet in bullets)


def test_every_builtin_method_is_checked():
    assert {"coop", "zsclip", "linear_probe", "tip_adapter_f", "clap"} <= set(OWN)


GOOD = f"""Title.

{HEADER}
- Precision: the official code is fp16
  (config.yaml: PREC); here fp32.
- Another departure.

Agreement with the official code: ...
"""


def test_helper_reads_bullets_and_their_continuations():
    assert departure_bullets(GOOD) == [
        "Precision: the official code is fp16 (config.yaml: PREC); here fp32.",
        "Another departure.",
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "0 lines"),
        ("Title.\n\nNo departures section at all.\n", "0 lines"),
        ("Title.\n\nDepartures:\n- Precision: fp16 there.\n", "0 lines"),
        (GOOD + "\n" + HEADER + "\n- Precision: again.\n", "2 lines"),
        (GOOD.replace("Agreement", "Departure: one more, the old way. Agreement"), "another"),
        (f"Title.\n\n{HEADER}\n\n- Precision: after a blank line.\n", "no bullets"),
        (f"Title.\n\n{HEADER}\nA paragraph, not a bullet.\n", "not a bullet"),
        (f"Title.\n\n{HEADER}\n- Widths from the backbone.\n- Precision: last.\n", "first bullet"),
    ],
)
def test_helper_rejects_a_docstring_without_the_section_in_its_form(doc, message):
    with pytest.raises(ValueError, match=message):
        departure_bullets(doc)
