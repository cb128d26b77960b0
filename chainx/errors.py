"""Errors that chainx reports to the user as a message, never as a traceback."""


class ChainxError(Exception):
    """A user error: the message names the bad input and the fix. Exit code 2."""

    exit_code = 2


class VerificationError(Exception):
    """The exported chain does not match what it must reproduce. Exit code 1."""

    exit_code = 1
