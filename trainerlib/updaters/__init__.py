"""Updaters define what one training iteration is."""
from trainerlib.updaters.amp import AmpContext
from trainerlib.updaters.standard_updater import StandardUpdater
from trainerlib.updaters.updater import Updater

__all__ = ['AmpContext', 'StandardUpdater', 'Updater']
