"""Data-parallel training on ``torch.distributed`` (torchrun, DDP; NCCL or gloo)."""
from trainerlib.distributed.communicator import (Communicator, SingleProcessCommunicator,
                                                 create_communicator, launched_by_torchrun)

__all__ = ['Communicator', 'SingleProcessCommunicator', 'create_communicator',
           'launched_by_torchrun']
