"""A data-parallel training script as a user writes it, for the torchrun tests.

    torchrun ... tests/dist_train_worker.py OUT [ITERATIONS]

Trains a small MLP with dropout (so each rank's random stream matters) on synthetic data
with ``Trainer(comm=create_communicator())``; rank 0 saves the final parameters to
``OUT/final.pt`` and the LogReport writes ``OUT/log``.
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import extensions as E  # noqa: E402
from trainerlib import Classifier, Trainer  # noqa: E402
from trainerlib.datasets import TupleDataset  # noqa: E402
from trainerlib.distributed import create_communicator  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.updaters import StandardUpdater  # noqa: E402


def main(out: str, iterations: int) -> None:
    torch.set_num_threads(1)
    comm = create_communicator()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(90, 6, generator=g)
    data = TupleDataset(x, (x.sum(1) > 0).long())
    model = Classifier(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.3),
                                     nn.Linear(12, 2)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    updater = StandardUpdater(SerialIterator(data, 4, comm=comm), optimizer, model=model)
    trainer = Trainer(updater, (iterations, 'iteration'), out=out, comm=comm)
    trainer.extend(E.LogReport(trigger=(7, 'iteration')))
    trainer.run()
    if comm.rank == 0:
        torch.save([p.detach() for p in model.parameters()], os.path.join(out, 'final.pt'))
    comm.finalize()


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60)
