"""User errors (bad names, files, checkpoints, configs) and failed protocols."""


class GradfeatError(Exception):
    """A mistake in what the user asked for, not a bug.

    Command-line entry points print it as a single ``error: <message>`` line on
    stderr and exit with status 2, without a traceback. Messages are one line and
    say what to do instead.
    """


class ProtocolFailed(Exception):
    """A protocol that cannot give a right number (its message is the reason).

    Raised from inside a protocol, e.g. when its features or logits are not
    finite; the protocol's result is not stored as a number.
    """
