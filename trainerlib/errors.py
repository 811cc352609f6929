"""Exceptions for user errors: command-line entry points print them in one line."""


class TrainerlibError(Exception):
    """Base of errors caused by input (config, data, snapshot, output directory)."""


class SnapshotError(TrainerlibError, ValueError):
    """A snapshot cannot be read or does not match what is being resumed."""


class OutputDirError(TrainerlibError, OSError):
    """The output directory cannot be created or written."""


class ConfigError(TrainerlibError, ValueError):
    """A configuration file or ``--set`` override is invalid (key, type or value)."""


class NonFiniteError(TrainerlibError, RuntimeError):
    """A parameter or gradient became NaN or infinite (training diverged)."""


class DataError(TrainerlibError, ValueError):
    """A data file (``.npz``, gzip IDX, image list, image) is missing, damaged or inconsistent.

    The message is one line naming the file (``list:line`` for a list entry) and the fix.
    """


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file does not exist (also a ``FileNotFoundError`` for ``except OSError``)."""
