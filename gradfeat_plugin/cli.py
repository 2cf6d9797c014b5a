"""What every command-line script shares: user errors become one line and status 2."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Callable, NoReturn

from .errors import GradfeatError, ProtocolFailed


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
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    # torch's forward-mode AD scripts its JVP decompositions on first use and warns
    # that torch.jit.script is deprecated: nothing a user can act on.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    try:
        return main()
    except (GradfeatError, ProtocolFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
