"""User errors (bad names, files, checkpoints, configs) and failed protocols."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class GradfeatError(Exception):
    """A mistake in what the user asked for, not a bug.

    Command-line entry points print it as a single ``error: <message>`` line on
    stderr and exit with status 2, without a traceback. Messages are one line and
    say what to do instead.
    """


class ProtocolFailed(Exception):
    """A protocol whose numbers cannot be trusted (non-finite features or logits).

    Not a user error: the run records the protocol as ``failed`` with ``reason``,
    keeps the protocols that finished, and goes on with the others.

    Args:
        reason: One line saying what went wrong and what to try.
    """

    status = "failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolDiverged(ProtocolFailed):
    """Training produced a non-finite loss; the protocol is recorded as ``diverged``."""

    status = "diverged"


@contextlib.contextmanager
def lightning_interrupts(trainer: Any) -> Iterator[None]:
    """Report a Ctrl-C inside ``trainer.fit``/``validate`` as ``KeyboardInterrupt``.

    Lightning catches the interrupt, cleans up, ignores SIGINT from then on and
    exits with status 1; here that exit becomes a ``KeyboardInterrupt`` again (the
    command lines print ``error: interrupted`` and exit 130) and the SIGINT
    handler from before the call is restored.

    Args:
        trainer: The Lightning ``Trainer`` whose call the block makes.
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit:
        if not trainer.interrupted:
            raise
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)
        raise KeyboardInterrupt from None
