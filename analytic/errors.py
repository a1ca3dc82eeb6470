"""Exceptions raised by the library.

Every operation validates before it computes, and states are immutable, so an exception always leaves the state
that was passed in exactly as it was.
"""


class InputError(ValueError):
    """Features, labels or targets that cannot be learned: NaN/Inf, wrong shape, wrong dtype, bad labels.

    Also raised for any other argument a caller gets wrong (a ridge, a size, a setting): every argument check of
    the library (:mod:`analytic.validation`) raises it. A subclass of ``ValueError``.

    Example:
      >>> analytic.accumulate(analytic.init_statistics(2), np.array([[1.0, 2.0]]), np.array([-1]))
      Traceback (most recent call last):
      ...
      analytic.errors.InputError: labels must be non-negative class ids, got -1
    """


class IntegrityError(ValueError):
    """An operation that would leave an invalid state: negative counts, a class that was never learned,
    a matrix that lost positive-definiteness, statistics accumulated under different configurations.

    Also raised for a state that is malformed (a pytree transform changed a leaf's dtype or shape) or that carries
    an error flag set inside ``jax.jit``. A subclass of ``ValueError``.

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([0, 1]))
      >>> analytic.subtract(stats, analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([0, 5])))
      Traceback (most recent call last):
      ...
      analytic.errors.IntegrityError: cannot subtract classes [5]: they were never learned
    """


class FileFormatError(ValueError):
    """A file that is corrupted, not written by this library, or written by an incompatible format version.

    Raised by :func:`analytic.load`, also for a signed-file check that fails. A subclass of ``ValueError``.

    Example:
      >>> import os, tempfile
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     path = os.path.join(folder, "notes.npz")
      ...     with open(path, "wb") as handle:
      ...         _ = handle.write(b"not an archive")
      ...     analytic.load(path)
      Traceback (most recent call last):
      ...
      analytic.errors.FileFormatError: ...notes.npz is not a readable analytic-learning file: ...
    """
