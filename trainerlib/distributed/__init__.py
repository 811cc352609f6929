"""Data-parallel training on ``torch.distributed`` (torchrun, DDP; NCCL or gloo)."""
from trainerlib.distributed.communicator import (Communicator, SingleProcessCommunicator,
                                                 create_communicator, launched_by_torchrun)
from trainerlib.distributed.context import comm_of, distributed_comm, is_main_process
from trainerlib.distributed.porting import create_multi_node_optimizer
from trainerlib.distributed.scatter import scatter_dataset
from trainerlib.distributed.sharding import equal_length_bounds, shard_bounds

__all__ = ['Communicator', 'SingleProcessCommunicator', 'comm_of', 'create_communicator',
           'create_multi_node_optimizer',
           'distributed_comm', 'equal_length_bounds', 'is_main_process', 'launched_by_torchrun',
           'scatter_dataset', 'shard_bounds']
