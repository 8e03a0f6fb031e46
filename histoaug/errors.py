"""Typed exceptions for errors a user can cause.

The CLI turns every :class:`HistoaugError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback. Each class also derives from the matching builtin so
callers can catch ``FileNotFoundError`` or ``ValueError`` as usual.
"""

from __future__ import annotations


class HistoaugError(Exception):
    """Base class of every error caused by user input (arguments, files, models)."""


class PCamFilesNotFoundError(HistoaugError, FileNotFoundError):
    """The PCam files of a split are missing (possibly still gzipped)."""


class PCamFormatError(HistoaugError, ValueError):
    """A PCam-format HDF5 file is corrupt, truncated, or has the wrong shapes or dtypes."""


class OutputExistsError(HistoaugError, FileExistsError):
    """An output exists and overwriting was not asked for."""


class InvalidArgumentError(HistoaugError, ValueError):
    """An argument has a value the operation cannot use."""


class OutputWriteError(HistoaugError, OSError):
    """An output cannot be written (permissions, disk full, missing directory)."""


class ArtifactError(HistoaugError, ValueError):
    """A model, artifact or prompts file is missing, malformed, tampered with or truncated."""


class StudyError(HistoaugError, ValueError):
    """A reader-study folder, answer file or server request is unusable (wrong study, unknown patch, duplicates)."""
