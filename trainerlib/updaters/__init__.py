"""Updaters define what one training iteration is."""
from trainerlib.updaters.amp import AmpContext
from trainerlib.updaters.gan_updater import GANUpdater
from trainerlib.updaters.grad_utils import (clip_grads, parameters_of, requires_grad,
                                            skip_all_on_overflow, step_all, zero_grad,
                                            zero_grads)
from trainerlib.updaters.multi_head_updater import Head, MultiHeadUpdater
from trainerlib.updaters.path_sgd_updater import PathSGDUpdater
from trainerlib.updaters.perturbation_updater import MeaningfulPerturbationUpdater
from trainerlib.updaters.standard_updater import StandardUpdater
from trainerlib.updaters.stochastic_updater import StochasticUpdater
from trainerlib.updaters.updater import Updater

__all__ = ['AmpContext', 'GANUpdater', 'Head', 'MeaningfulPerturbationUpdater',
           'MultiHeadUpdater', 'PathSGDUpdater',
           'StandardUpdater', 'StochasticUpdater', 'Updater', 'clip_grads', 'parameters_of', 'requires_grad',
           'skip_all_on_overflow', 'step_all', 'zero_grad', 'zero_grads']
