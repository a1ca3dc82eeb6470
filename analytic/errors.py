"""Exceptions raised by the library.

Every operation validates before it computes, and states are immutable, so an exception always leaves the state
that was passed in exactly as it was.
"""


class InputError(ValueError):
    """Features, labels or targets that cannot be learned: NaN/Inf, wrong shape, wrong dtype, bad labels."""


class IntegrityError(ValueError):
    """An operation that would leave an invalid state: negative counts, a class that was never learned,
    a matrix that lost positive-definiteness, statistics accumulated under different configurations."""


class FileFormatError(ValueError):
    """A file that is corrupted, not written by this library, or written by an incompatible format version."""
