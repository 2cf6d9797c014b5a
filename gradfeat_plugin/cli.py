"""What every command-line script shares: user errors become one line and status 2."""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from typing import Any, Callable, NoReturn

from .config.safe_yaml import parse_yaml
from .errors import GradfeatError, ProtocolFailed
from .protocols.settings import LIGHTNING_LOGGERS

#: Plain values a ``--model-kwargs`` value may be (lists and tuples of them too).
SCALAR_TYPES = (bool, int, float, str, type(None))


class ArgumentParser(argparse.ArgumentParser):
    """Reports bad arguments as a :class:`GradfeatError` (one ``error:`` line)."""

    def error(self, message: str) -> NoReturn:
        raise GradfeatError(f"{message}; see --help")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def show_info_lines(show: bool = True) -> None:
    """Print the package's own info lines (where θ1's outputs are kept) on stderr,
    or only its warnings; command lines show them with their progress bars."""
    log = logging.getLogger("gradfeat_plugin")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO if show else logging.WARNING)


def _scalar_or_sequence(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, SCALAR_TYPES) for v in value)
    return isinstance(value, SCALAR_TYPES)


def parse_model_kwargs(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as constructor keywords, each value read as a YAML
    scalar (``32``, ``true``, ``gelu``, ``[32, 32]``), else as a Python literal
    (``32,32`` and ``(32, 32)`` are tuples, ``1e-3`` a float); neither runs code.

    Args:
        items: e.g. ``["img_size=32", "patch_size=8"]``.

    Raises:
        GradfeatError: An item without ``=``, a key that is not a name, a key
            given twice, or a value that is a mapping.

    >>> parse_model_kwargs(["img_size=32", "patch_size=8", "drop_rate=1e-3"])
    {'img_size': 32, 'patch_size': 8, 'drop_rate': 0.001}
    """
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise GradfeatError(
                "--model-kwargs takes KEY=VALUE pairs such as img_size=32, "
                f"got {item!r}"
            )
        if key in kwargs:
            raise GradfeatError(f"--model-kwargs gives {key} twice")
        try:
            value = parse_yaml(text, "--model-kwargs") if text.strip() else ""
        except GradfeatError:
            raise GradfeatError(
                f"--model-kwargs {key}: cannot read {text!r} as a YAML scalar or list"
            ) from None
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
        if not _scalar_or_sequence(value):
            raise GradfeatError(
                f"--model-kwargs {key} must be a number, true/false, a name or a list "
                f"of those, got {text!r}"
            )
        kwargs[key] = list(value) if isinstance(value, tuple) else value
    return kwargs


def parse_normalization(values: list[str], flag: str) -> str | list[float]:
    """``--mean``/``--std`` values: numbers, one per channel, or one name
    (``imagenet``, ``inception``, ``clip``).

    Raises:
        GradfeatError: Neither numbers nor a single name.

    >>> parse_normalization(["0.5", "0.25", "1"], "--std")
    [0.5, 0.25, 1.0]
    >>> parse_normalization(["clip"], "--mean")
    'clip'
    """
    try:
        return [float(v) for v in values]
    except ValueError:
        if len(values) == 1:
            return values[0]
        raise GradfeatError(
            f"{flag} takes numbers (one per channel) or one name, "
            f"got {' '.join(values)}"
        ) from None


def show_progress(no_progress: bool = False) -> bool:
    """Whether a command line draws progress bars: not with ``--no-progress``, and
    only on a terminal (in a log file or a pipe every redraw would be a new line).

    Args:
        no_progress: The script's ``--no-progress`` flag.
    """
    return not no_progress and sys.stderr.isatty()


def main_guard(main: Callable[[], int]) -> int:
    """Run a script's ``main``; a :class:`GradfeatError` (or a :class:`ProtocolFailed`
    that reaches it) prints ``error: ...`` and gives 2.

    Lightning's info lines are silenced; its progress bars and warnings are not.

    Args:
        main: The script's entry function, returning its exit status.

    Returns:
        The exit status for ``sys.exit``.
    """
    # Lightning's per-Trainer info lines (devices, tips) repeat for every protocol;
    # progress bars and warnings stay.
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return main()
    except (GradfeatError, ProtocolFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
