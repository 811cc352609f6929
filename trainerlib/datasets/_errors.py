"""Turn a library exception into the reason part of a one-line :class:`DataError`."""
from __future__ import annotations

_UNSAFE_HINTS = ('pickle', 'weights_only')


def reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name if the message is empty.

    A message that mentions pickling (NumPy suggests ``allow_pickle=True`` for a file it could
    only unpickle) is replaced: trainerlib never loads data unsafely, so it never repeats that
    advice.
    """
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ''
    if any(hint in line.lower() for hint in _UNSAFE_HINTS):
        line = 'it would have to be unpickled, which trainerlib never does'
    return line or type(exc).__name__
