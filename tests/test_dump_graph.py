"""DumpGraph: the autograd graph of a reported value, drawn once, as Chainer's."""
import re

import pytest
import torch
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.reporter import Reporter
from trainerlib.updaters import StandardUpdater


def make_trainer(out, stop=3):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model = Classifier(net)
    data = TensorDataset(torch.randn(12, 3), torch.randint(0, 2, (12,)))
    updater = StandardUpdater(SerialIterator(data, 4, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    return Trainer(updater, (stop, 'iteration'), out=str(out))


def edges(dot):
    labels = dict(re.findall(r'(n\d+) \[.*label="([^"]*)"\];', dot))
    return {(labels[a], labels[b]) for a, b in re.findall(r'(n\d+) -> (n\d+);', dot)}


def test_draws_the_graph_of_the_loss_once(tmp_path):
    trainer = make_trainer(tmp_path)
    graph = E.DumpGraph('main/loss')
    trainer.extend(graph)
    trainer.run()
    assert graph.drawn and not trainer.reporter.keep_graph     # the flag is off again
    found = edges((tmp_path / 'cg.dot').read_text())
    assert ('NllLossBackward0', 'main/loss: () float32') in found
    assert ('main/predictor/0/weight: (4, 3) float32', 'TBackward0') in found
    assert ('main/predictor/2/bias: (2,) float32', 'AddmmBackward0') in found


def test_other_reports_are_detached_again_after_drawing(tmp_path):
    seen = []
    trainer = make_trainer(tmp_path)
    trainer.extend(E.DumpGraph('main/loss', filename='graph.dot'))
    trainer.extend(lambda tr: seen.append(tr.observation['main/loss'].grad_fn is not None),
                   priority=0)
    trainer.run()
    assert seen == [True, False, False] and (tmp_path / 'graph.dot').is_file()


def test_not_drawn_again_after_a_resume_and_the_graph_is_not_kept(tmp_path):
    """save -> new object -> load -> continue: a drawn graph stays drawn."""
    first = make_trainer(tmp_path, stop=2)
    first.extend(E.DumpGraph('main/loss'))
    first.run()
    (tmp_path / 'cg.dot').unlink()
    resumed = make_trainer(tmp_path, stop=4)
    graph = E.DumpGraph('main/loss')
    resumed.extend(graph)
    resumed.load_state_dict(first.state_dict())
    resumed.extend(lambda tr: seen.append(tr.observation['main/loss'].grad_fn), priority=0)
    seen = []
    resumed.run()
    assert graph.drawn and not (tmp_path / 'cg.dot').exists() and seen == [None, None]


def test_a_root_without_a_graph_is_one_clear_error(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.extend(E.DumpGraph('main/nothing'))
    with pytest.raises(TypeError, match="'main/nothing' is not a tensor with an autograd graph"):
        trainer.run(show_loop_exception_msg=False)
    assert not trainer.reporter.keep_graph


@pytest.mark.parametrize('keep, has_graph', [(False, False), (True, True)])
def test_reporter_keep_graph(keep, has_graph):
    reporter, observation = Reporter(), {}
    reporter.keep_graph = keep
    x = torch.ones(2, requires_grad=True)
    with reporter.scope(observation):
        reporter.report({'y': (x * 2).sum()})
    assert (observation['y'].grad_fn is not None) is has_graph
