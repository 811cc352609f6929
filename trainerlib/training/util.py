"""``chainer.training.util``: ``get_trigger``."""
from trainerlib.triggers.get_trigger import get_trigger

__all__ = ['get_trigger']
