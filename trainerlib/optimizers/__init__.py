"""Optimizers beyond torch.optim: Path-SGD, Newton's method."""
from trainerlib.optimizers.newton import Newton, NewtonStepError
from trainerlib.optimizers.path_norm import (GammaFactors, UnsupportedModuleError, check_supported,
                                             path_gamma_factors, path_gammas, path_regularizer)
from trainerlib.optimizers.path_sgd import PathSGD

__all__ = ['GammaFactors', 'Newton', 'NewtonStepError', 'PathSGD', 'UnsupportedModuleError',
           'check_supported', 'path_gamma_factors', 'path_gammas', 'path_regularizer']
