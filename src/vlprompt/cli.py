"""The `vlprompt` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import sys

from vlprompt.errors import VlpromptError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlprompt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the methods")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "methods":
            from vlprompt.methods import list_methods

            print("\n".join(list_methods()))
        return 0
    except (VlpromptError, FileNotFoundError, ValueError) as exc:
        print(f"vlprompt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
