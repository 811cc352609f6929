"""The default stack and the accumulating extensions never convert a tensor to a
Python value on iterations where nothing is emitted (DESIGN §7)."""
import io

import torch

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

EVERY = 10
SYNCS = ['item', 'tolist', 'numpy', 'cpu', '__float__', '__int__', '__bool__', '__index__']


def test_no_tensor_to_host_conversion_between_emissions(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                           torch.nn.Linear(8, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(
        x, (x[:, 0] > 0).long()), 8, shuffle=False), optimizer, model)
    trainer = Trainer(updater, (3 * EVERY, 'iteration'), out=str(tmp_path))
    every = (EVERY, 'iteration')
    sink = io.StringIO()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1)
    trainer.extend(E.LogReport(trigger=every))
    trainer.extend(E.PrintReport(['iteration', 'main/loss', 'main/accuracy'], out=sink))
    trainer.extend(E.ProgressBar(update_interval=EVERY, out=sink))
    trainer.extend(E.ExponentialShift('momentum', 0.99))
    trainer.extend(E.observe_lr(), trigger=every)
    trainer.extend(E.LRScheduler(scheduler, trigger=every, monitor='main/loss'))
    trainer.extend(E.MicroAverage('main/accuracy', 'main/loss', 'ratio', trigger=every))
    trainer.extend(E.ParameterStatistics(model, trigger=every))
    trainer.extend(E.PlotReport(['main/loss'], trigger=every, filename='loss.png'))
    trainer.extend(E.TensorBoardReport())

    converted = []

    def guard(name):
        original = getattr(torch.Tensor, name)

        def checked(self, *args, **kwargs):
            if trainer.updater.iteration % EVERY:     # nothing is emitted on this iteration
                converted.append((trainer.updater.iteration, name))
            return original(self, *args, **kwargs)
        return checked

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, guard(name))
    trainer.run()
    monkeypatch.undo()
    assert converted == []
    log = trainer.get_extension('LogReport').log
    assert [e['iteration'] for e in log] == [10, 20, 30]
    assert all(key in log[-1] for key in ('main/loss', 'lr', 'ratio'))
    assert 'main/predictor/0/weight/data/mean' in log[-1]
    assert sink.getvalue().count('\n') >= 4
