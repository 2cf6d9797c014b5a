"""The ``benchmarks/leaderboard.py`` command line."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable, Sequence

from ..cli import ArgumentParser, main_guard
from ..errors import GradfeatError
from ._files import create_temporary_file
from .leaderboard import (
    ABLATION_CAPTION,
    FORMATS,
    OTHER_CAPTION,
    VIEWS,
    leaderboard,
    render_leaderboard,
)
from .plot import PLOT_MARKER, PLOT_METADATA_KEYS, figure_files, plot_leaderboard
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
        "--view",
        choices=VIEWS,
        default="compact",
        help="md and html: compact (one row per model, weights, dataset and label "
        "fraction, each Table 1 ablation in the paper's layout, then any other "
        "setting) or full (every setting in one table); csv and json always hold "
        "every row, with its kind",
    )
    parser.add_argument(
        "--show-val",
        action="store_true",
        help="md and html: the validation metric each number was chosen with, "
        "beside it (csv always has it)",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="also save bar charts of every row to PNG and, when the results have "
        "them, accuracy against the label fraction to STEM_label_fraction.EXT and "
        "the Table 1 ablation to STEM_ablation.EXT beside it",
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


#: How each table format starts; ``--out`` replaces only files that start so.
TABLE_STARTS = (
    "| model |", "model,", '<table class="gradfeat-leaderboard">', "[",
    ABLATION_CAPTION.partition("{")[0], OTHER_CAPTION,
)
#: Files SQLite keeps next to a database.
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_output(
    path: str, store: str, ours: Callable[[bytes], bool], what: str
) -> None:
    """Refuse to write over the results store, or over a file we did not write."""
    if any(_same_file(path, store + side) for side in _SQLITE_SIDE_FILES):
        raise GradfeatError(
            f"refusing to write the {what} to {path}: it is the results database"
        )
    folder = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(folder):
        raise GradfeatError(
            f"folder {folder} does not exist; create it or pick another path"
        )
    if not os.path.lexists(path):
        return
    if not os.path.isfile(path):
        raise GradfeatError(
            f"refusing to write the {what} to {path}: not a regular file"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as err:
        raise GradfeatError(f"cannot read {path}: {err.strerror}") from None
    if head and not ours(head):
        raise GradfeatError(
            f"refusing to replace {path}: it is not a {what} written by "
            "leaderboard.py; remove it or pick another path"
        )


def _is_table(head: bytes) -> bool:
    return head.lstrip().startswith(tuple(s.encode() for s in TABLE_STARTS))


def _is_plot(head: bytes) -> bool:
    return PLOT_MARKER.encode() in head


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary)`` next to ``path``, then rename: never a half-written file.

    A link is written through (its target is replaced, the link kept), a file that
    is replaced keeps its permissions, and a new one follows the umask.
    """
    path = os.path.realpath(path)
    folder, name = os.path.split(path)
    suffix = os.path.splitext(name)[1]
    temporary = create_temporary_file(folder, prefix=f".{name}.", suffix=suffix)
    try:
        write(temporary)
        if os.path.exists(path):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _write_text(path: str, text: str) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)

    _write_atomically(path, write)


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
    plots = figure_files(args.plot, records) if args.plot else {}
    targets = [t for t in (args.out, *plots.values(), args.update) if t]
    if len({os.path.realpath(t) for t in targets}) < len(targets):
        raise GradfeatError("--out, --plot and --update must name different files")
    if args.out:
        _check_output(args.out, str(store.path), _is_table, "leaderboard table")
    if args.plot:
        for path in plots.values():
            _check_output(path, str(store.path), _is_plot, "leaderboard plot")
        fmt = os.path.splitext(args.plot)[1].lstrip(".").lower()
        if fmt not in PLOT_METADATA_KEYS:
            raise GradfeatError(
                f"--plot {args.plot}: use a .png, .pdf or .svg file name"
            )
    if args.update:
        side_files = (str(store.path) + side for side in _SQLITE_SIDE_FILES)
        if any(_same_file(args.update, side) for side in side_files):
            raise GradfeatError(
                f"refusing to update {args.update}: it is the results database"
            )
        folder = os.path.dirname(os.path.realpath(args.update))
        if not os.path.isdir(folder):
            raise GradfeatError(
                f"folder {folder} does not exist; create it or pick another path"
            )
    board = leaderboard(records)
    text = render_leaderboard(board, args.format, args.view, args.show_val)
    document = _updated_document(args.update, text) if args.update else None
    for name, path in plots.items():
        _write_atomically(
            path, lambda temp, name=name: plot_leaderboard(board.full, temp, figure=name)
        )
    if document is not None:
        _write_text(args.update, document)
    if args.out:
        _write_text(args.out, text)
    elif document is None:
        sys.stdout.write(text)
    return 0
