"""User errors (bad names, files, checkpoints, configs) and failed protocols."""


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
