"""trainerlib.chainer_compat: Chainer's spellings outside chainer.training, as torch objects."""
import warnings

import pytest
import torch

import trainerlib.chainer_compat as chainer
import trainerlib.chainer_compat.functions as F
import trainerlib.chainer_compat.links as L
from trainerlib import Trainer, training
from trainerlib.chainer_compat import chainerx
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_state


class MLP(chainer.Chain):
    def __init__(self, n_in=None):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(n_in, 5)
            self.l2 = L.Linear(3)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x)))


@pytest.mark.parametrize('spec, name', [
    (-1, 'cpu'), ('-1', 'cpu'), ('@numpy', 'cpu'), ('@intel64', 'cpu'), (None, 'cpu'),
    (0, 'cuda:0'), ('1', 'cuda:1'), ('@cupy:2', 'cuda:2'), ('cuda:3', 'cuda:3'),
    ('cpu', 'cpu'), (torch.device('cpu'), 'cpu'),
])
def test_get_device(spec, name):
    device = chainer.get_device(spec)
    assert device == name and isinstance(device, str) and device.xp is torch
    assert device.xp is not chainerx and not chainerx.is_available()


@pytest.mark.parametrize('spec', ['@chainerx', 'gpu', '@cupy:x'])
def test_get_device_bad_specifier(spec):
    with pytest.raises(ValueError, match='unknown device specifier'):
        chainer.get_device(spec)


def test_device_is_taken_wherever_torch_takes_a_device():
    device = chainer.get_device(-1)
    device.use()
    model = MLP(4).to_device(device)
    assert torch.zeros(1).to(device).device == torch.device('cpu')
    assert next(model.parameters()).device == torch.device('cpu')


@pytest.mark.parametrize('n_in, x_shape', [(None, (2, 4)), (4, (2, 4)), (None, (2, 1, 2, 2))])
def test_linear_infers_its_input_size_and_flattens(n_in, x_shape):
    torch.manual_seed(0)
    model = MLP(n_in)
    assert model(torch.randn(*x_shape)).shape == (2, 3)
    assert model.l1.weight.shape == (5, 4) and type(model.l1).__name__ == '_Linear'
    assert [name for name, _ in model.namedparams()] == ['/l1/weight', '/l1/bias',
                                                          '/l2/weight', '/l2/bias']


@pytest.mark.parametrize('args, in_channels', [((None, 4, 3), 2), ((2, 4, 3), 2), ((4, 3), 2)])
def test_convolution2d_forms(args, in_channels):
    conv = L.Convolution2D(*args, stride=1, pad=1)
    assert conv(torch.zeros(1, in_channels, 5, 5)).shape == (1, 4, 5, 5)
    assert conv.weight.shape == (4, in_channels, 3, 3)


@pytest.mark.parametrize('make, cls, hyper', [
    (lambda: chainer.optimizers.Adam(), torch.optim.Adam,
     {'lr': 0.001, 'betas': (0.9, 0.999), 'eps': 1e-8}),
    (lambda: chainer.optimizers.Adam(alpha=0.01, beta1=0.5), torch.optim.Adam,
     {'lr': 0.01, 'betas': (0.5, 0.999)}),
    (lambda: chainer.optimizers.AdamW(alpha=0.01, weight_decay_rate=1e-4), torch.optim.AdamW,
     {'lr': 0.01, 'weight_decay': 1e-2}),
    (lambda: chainer.optimizers.SGD(lr=0.1), torch.optim.SGD, {'lr': 0.1, 'momentum': 0}),
    (lambda: chainer.optimizers.MomentumSGD(), torch.optim.SGD, {'lr': 0.01, 'momentum': 0.9}),
])
def test_optimizer_setup_makes_a_torch_optimizer(make, cls, hyper):
    model = MLP(4)
    opt = make()
    assert opt.setup(model) is opt and opt.target is model and isinstance(opt, cls)
    group = opt.param_groups[0]
    assert all(group[k] == pytest.approx(v) for k, v in hyper.items())
    assert len(group['params']) == 4


def test_adam_weight_decay_rate_points_at_adamw():
    with pytest.raises(ValueError, match='AdamW'):
        chainer.optimizers.Adam(weight_decay_rate=1e-4)


def test_optimizer_setup_needs_a_module():
    with pytest.raises(TypeError, match='needs an nn.Module'):
        chainer.optimizers.SGD().setup([torch.zeros(1)])


def data(n=40):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return chainer.datasets.TupleDataset(x, (x[:, 0] > 0).to(torch.int32))


def trainer_of(model, out, stop=6):
    """A Chainer-spelled trainer: the updater takes the model from ``optimizer.target``."""
    opt = chainer.optimizers.MomentumSGD(lr=0.1).setup(model)
    it = chainer.iterators.SerialIterator(data(), 8, seed=0)
    updater = training.updaters.StandardUpdater(it, opt, device=chainer.get_device(-1))
    return Trainer(updater, (stop, 'iteration'), out=str(out))


def test_updater_trains_the_optimizer_target(tmp_path):
    torch.manual_seed(0)
    model = L.Classifier(MLP())
    trainer = trainer_of(model, tmp_path)
    assert trainer.updater.get_model('main') is model
    assert isinstance(trainer.updater.get_iterator('main'), SerialIterator)
    model.predictor(torch.zeros(1, 4))          # materialize the lazy parameters
    before = [p.detach().clone() for p in model.parameters()]
    trainer.run()
    assert {'main/loss', 'main/accuracy'} <= set(trainer.observation)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_save_npz_load_npz_into_a_model_with_uninitialized_parameters(tmp_path):
    """Chainer loads into links whose input size is not known yet; so does load_npz here,
    and the run continues bit-identically (save -> new objects -> load -> continue)."""
    torch.manual_seed(0)
    full = trainer_of(L.Classifier(MLP()), tmp_path / 'a', stop=6)
    full.run()
    torch.manual_seed(0)
    first = trainer_of(L.Classifier(MLP()), tmp_path / 'b', stop=3)
    first.run()
    chainer.serializers.save_npz(str(tmp_path / 'snap'), first)
    torch.manual_seed(5)   # another init: everything comes from the file
    resumed = trainer_of(L.Classifier(MLP()), tmp_path / 'c', stop=6)
    assert torch.nn.parameter.is_lazy(resumed.updater.get_model('main').predictor.l1.weight)
    chainer.serializers.load_npz(str(tmp_path / 'snap'), resumed)
    resumed.run()
    want = full.updater.get_model('main').state_dict()
    got = resumed.updater.get_model('main').state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert load_state(str(tmp_path / 'snap'))['updater']['iteration'] == 3


def test_load_npz_refuses_partial_loads(tmp_path):
    model = MLP(4)
    model(torch.zeros(1, 4))
    chainer.serializers.save_npz(str(tmp_path / 'm'), model)
    with pytest.raises(ValueError, match='not supported'):
        chainer.serializers.load_npz(str(tmp_path / 'm'), model, path='updater/model:main/')
    chainer.serializers.load_npz(str(tmp_path / 'm'), MLP(4))


@pytest.mark.parametrize('reduce, shape', [('mean', ()), ('no', (3,))])
def test_cross_entropies_take_int32_labels(reduce, shape):
    x, t = torch.randn(3, 4), torch.tensor([0, 3, 1], dtype=torch.int32)
    loss = F.softmax_cross_entropy(x, t, reduce=reduce)
    assert loss.shape == shape
    want = torch.nn.functional.cross_entropy(x, t.long(), reduction='none')
    assert torch.allclose(loss, want.mean() if reduce == 'mean' else want)
    assert F.sigmoid_cross_entropy(x, (x > 0).to(torch.int32), reduce=reduce).shape[:1] == \
        (() if reduce == 'mean' else (3,))
    with pytest.raises(ValueError, match='reduce'):
        F.softmax_cross_entropy(x, t, reduce='sum')


def test_functions_are_torch_functions():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(F.relu(x), torch.relu(x))
    assert torch.allclose(F.softmax(x, axis=1).sum(1), torch.ones(2, 4, 4))
    assert F.max_pooling_2d(x, 2).shape == (2, 3, 2, 2)
    assert F.average_pooling_2d(x, 2, stride=1).shape == (2, 3, 3, 3)
    assert torch.equal(F.dropout(x, train=False), x)
    assert F.reshape(x, (2, -1)).shape == (2, 48)
    assert float(F.accuracy(torch.eye(3), torch.arange(3, dtype=torch.int32))) == 1.0


@pytest.mark.parametrize('kwargs, x_shape, y_dtype', [
    ({}, (784,), torch.int32),
    ({'ndim': 3, 'label_dtype': torch.int64}, (1, 28, 28), torch.int64),
    ({'ndim': 2, 'scale': 255.0}, (28, 28), torch.int32),
])
def test_get_mnist_offline(kwargs, x_shape, y_dtype):
    with pytest.warns(UserWarning, match='8,000 train / 2,000 test'):
        train, test = chainer.datasets.get_mnist(**kwargs)
    assert (len(train), len(test)) == (8000, 2000)
    x, y = train[0]
    assert x.shape == x_shape and y.dtype == y_dtype and x.dtype == torch.float32
    assert float(x.max()) == kwargs.get('scale', 1.0) and float(x.min()) == 0.0


def test_get_mnist_without_labels_and_bad_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        images, _ = chainer.datasets.get_mnist(withlabel=False)
    assert images.shape == (8000, 784)
    with pytest.raises(ValueError, match='ndim must be 1, 2 or 3'):
        chainer.datasets.get_mnist(ndim=4)


def test_chain_list_and_cleargrads():
    chain = chainer.ChainList(L.Linear(2, 2))
    chain.add_link(L.Linear(2, 1))
    assert len(chain) == 2 and chain[1].out_features == 1
    y = chain[1](chain[0](torch.ones(1, 2)))
    y.sum().backward()
    chain.cleargrads()
    assert all(p.grad is None for p in chain.parameters())
