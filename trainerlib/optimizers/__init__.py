"""Optimizers beyond torch.optim: Path-SGD."""
from trainerlib.optimizers.path_norm import (UnsupportedModuleError, check_supported, path_gammas,
                                             path_regularizer)
from trainerlib.optimizers.path_sgd import PathSGD

__all__ = ['PathSGD', 'UnsupportedModuleError', 'check_supported', 'path_gammas',
           'path_regularizer']
