"""The one exception type for user errors (bad names, files, checkpoints, configs)."""


class GradfeatError(Exception):
    """A mistake in what the user asked for, not a bug.

    Command-line entry points print it as a single ``error: <message>`` line on
    stderr and exit with status 2, without a traceback. Messages are one line and
    say what to do instead.
    """
