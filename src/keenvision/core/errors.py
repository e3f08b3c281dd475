"""The errors a user can fix, in a module that imports nothing heavy: the command line catches them without
importing torch (`keen --help` stays fast)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments or inputs the user can fix; printed as one line, exit status 2."""


class ImageReadError(ValueError):
    """An input that cannot be turned into an image; the message is one line naming the input."""


class WeightsError(ValueError):
    """Weights that are missing, corrupt, or do not fit the model."""
