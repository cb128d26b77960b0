"""Errors that chainx reports to the user as a message, never as a traceback."""


class ChainxError(Exception):
    """A user error: the message names the bad input and the fix. Exit code 2."""

    exit_code = 2


class VerificationError(Exception):
    """The exported chain does not match what it must reproduce. Exit code 1."""

    exit_code = 1


class UnfaithfulChainError(ChainxError):
    """The optimisation ended with a chain that keeps half or fewer of the region's
    predictions: it explains nothing, so none is written. Exit code 1."""

    exit_code = 1
