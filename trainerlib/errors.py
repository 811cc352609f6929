"""Exceptions for user errors: command-line entry points print them in one line."""


class TrainerlibError(Exception):
    """Base of errors caused by input (config, data, snapshot, output directory)."""


class SnapshotError(TrainerlibError, ValueError):
    """A snapshot cannot be read or does not match what is being resumed."""


class SnapshotMismatchError(SnapshotError):
    """A readable snapshot that was made for something else (another optimizer class,
    param-group layout or model structure); found before anything was loaded.

    ``str(error)`` is ``'<where> <reason>; <fix>'``, one line; ``reason`` and ``fix``
    let a caller name the file instead (``autoload: out/snapshot_iter_8 was made …``).

    Args:
        reason: what differs, e.g. ``"was made with Adam for optimizer 'main', this run
            uses SGD"``.
        fix: what to do, e.g. ``'resume with the same optimizer'``.
        where: the subject of the sentence (default ``'the snapshot'``).
    """

    def __init__(self, reason: str, fix: str = '', where: str = 'the snapshot') -> None:
        super().__init__(f'{where} {reason}; {fix}' if fix else f'{where} {reason}')
        self.reason, self.fix, self.where = reason, fix, where


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
