"""A stand-in for ``chainerx``, which trainerlib does not use: nothing is a ChainerX array.

Chainer's examples test ``device.xp is not chainerx``; that holds for every device here.
"""


def is_available() -> bool:
    """Always False: trainerlib runs on PyTorch."""
    return False
