"""The ``benchmarks/leaderboard.py`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..cli import ArgumentParser, main_guard
from ..errors import GradfeatError
from .leaderboard import FORMATS, leaderboard_table, render
from .plot import plot_leaderboard
from .store import RESULTS_ENV_VAR, ResultsStore, default_results_path


def build_parser() -> argparse.ArgumentParser:
    """The leaderboard's argument parser."""
    parser = ArgumentParser(
        prog="leaderboard.py",
        description="Print the leaderboard of a gradfeat results database.",
    )
    parser.add_argument(
        "--results",
        default=None,
        help=f"SQLite results database (default: ${RESULTS_ENV_VAR} if set, else "
        f"./gradfeat_results.db)",
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format")
    parser.add_argument(
        "--plot", default=None, metavar="PNG", help="also save a grouped bar chart"
    )
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="write the table here, not stdout"
    )
    parser.add_argument(
        "--update",
        default=None,
        metavar="MD",
        help=f"replace the table between {BEGIN_MARK} and {END_MARK} in this file",
    )
    return parser


BEGIN_MARK = "<!-- leaderboard:begin -->"
END_MARK = "<!-- leaderboard:end -->"


def _updated_document(path: str, table: str) -> str:
    """The document at ``path`` with the text between the markers replaced."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise GradfeatError(f"cannot read {path}: {err.strerror}") from None
    start, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise GradfeatError(f"{path} has no {BEGIN_MARK} ... {END_MARK} section")
    return text[: start + len(BEGIN_MARK)] + "\n" + table + text[end:]


def leaderboard_main(argv: Sequence[str] | None = None) -> int:
    """Run the leaderboard command; user errors print one ``error:`` line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status: 0, or 2 after a user error (nothing is written then).
    """
    return main_guard(lambda: _leaderboard(build_parser().parse_args(argv)))


def _leaderboard(args: argparse.Namespace) -> int:
    store = ResultsStore(args.results or default_results_path(), create=False)
    records = store.records()
    if not records:
        raise GradfeatError(
            f"{store.path} holds no results yet; run benchmarks/eval.py first"
        )
    for target in (args.out, args.plot, args.update):
        folder = os.path.dirname(os.path.abspath(target)) if target else None
        if folder and not os.path.isdir(folder):
            raise GradfeatError(
                f"folder {folder} does not exist; create it or pick another path"
            )
    table = leaderboard_table(records)
    text = render(table, args.format)
    document = _updated_document(args.update, text) if args.update else None
    if args.plot:
        plot_leaderboard(table, args.plot)
    if document is not None:
        temporary = f"{args.update}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(document)
        os.replace(temporary, args.update)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    elif document is None:
        sys.stdout.write(text)
    return 0
