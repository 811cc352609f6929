"""Updaters define what one training iteration is."""
from trainerlib.updaters.amp import AmpContext
from trainerlib.updaters.grad_utils import (clip_grads, parameters_of, requires_grad, step_all,
                                            zero_grads)
from trainerlib.updaters.standard_updater import StandardUpdater
from trainerlib.updaters.updater import Updater

__all__ = ['AmpContext', 'StandardUpdater', 'Updater', 'clip_grads', 'parameters_of',
           'requires_grad', 'step_all', 'zero_grads']
