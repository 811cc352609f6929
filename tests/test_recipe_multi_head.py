"""The multi_head recipe: the composite builder, and the recipe end to end through main(argv)."""
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip('sklearn')  # the digits data set comes with scikit-learn

from recipes import multi_head  # noqa: E402
from recipes._multi_head_data import Composites, build_composites, compose  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from trainerlib.datasets import get_digits  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.serialization import load_state  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

torch.set_flush_denormal(True)

CONFIG = Path(multi_head.__file__).parent / 'configs' / 'multi_head.yaml'
# a few seconds: two digits of 8x8 side by side, 3,000 training composites, 2 epochs
TINY = ['--set', 'dataset=digits', '--set', 'data.positions=2', '--set', 'data.train_size=3000',
        '--set', 'data.test_size=400', '--set', 'train.batch_size=64', '--set', 'train.lr=0.003',
        '--set', 'train.head_lr=0.003', '--set', 'train.epochs=2']
ITERS = 47  # ceil(3000 / 64): iterations of one epoch




def test_shipped_config_is_the_defaults():
    schema = schema_of(multi_head)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])


# -- the composites ----------------------------------------------------------------------------

@pytest.mark.parametrize('positions, overlap', [(2, 0), (3, 0), (3, 3), (4, 7)])
def test_compose_places_images_left_to_right_with_max_in_the_overlap(positions, overlap):
    g = torch.Generator().manual_seed(positions + overlap)
    images = torch.rand(5, positions, 2, 6, 8, generator=g)
    canvas = compose(images, overlap)
    step = 8 - overlap
    assert canvas.shape == (5, 2, 6, positions * 8 - (positions - 1) * overlap)
    expected = torch.zeros_like(canvas)   # by hand, one column at a time
    for k in range(positions):
        for j in range(8):
            col = k * step + j
            expected[..., col] = torch.maximum(expected[..., col], images[:, k, ..., j])
    assert torch.equal(canvas, expected)


@pytest.mark.parametrize('positions, overlap', [(2, 0), (3, 2)])
def test_composites_show_their_source_images_and_labels(positions, overlap):
    images, labels = get_digits().datasets
    train, test = build_composites(images, labels, positions=positions, train_size=300,
                                   test_size=100, test_fraction=0.2, seed=5, overlap=overlap)
    assert (len(train), len(test)) == (300, 100)
    assert train.image_shape == (1, 8, 8 * positions - (positions - 1) * overlap)
    for data in (train, test):
        x, t = data.get_batch(torch.arange(len(data)))
        assert x.shape == (len(data), *data.image_shape) and t.shape == (len(data), positions)
        assert torch.equal(t, labels[data.index])            # label k = label of image k
        step = 8 - overlap
        for k in range(positions):                           # image k is at columns k*step...
            block = x[..., k * step:k * step + 8]
            assert torch.all(block >= images[data.index[:, k]])   # max with its neighbours
            first = k * step + (overlap if k > 0 else 0)
            last = k * step + 8 - (overlap if k < positions - 1 else 0)
            assert torch.equal(x[..., first:last],                # outside the overlaps: itself
                               images[data.index[:, k]][..., first - k * step:last - k * step])
        xi, ti = data[7]
        assert torch.equal(xi, x[7]) and torch.equal(ti, t[7])


def test_test_composites_use_only_test_sources_and_are_deterministic():
    images, labels = get_digits().datasets
    kw = dict(positions=3, train_size=2000, test_size=500, test_fraction=0.2)
    train, test = build_composites(images, labels, seed=0, **kw)
    train_ids, test_ids = set(train.index.flatten().tolist()), set(test.index.flatten().tolist())
    assert not train_ids & test_ids
    assert len(test_ids) > 300 and len(train_ids | test_ids) > 1700   # most sources are used
    n_test = round(len(images) * 0.2)
    assert len(test_ids) <= n_test and len(train_ids) <= len(images) - n_test
    again = build_composites(images, labels, seed=0, **kw)
    other = build_composites(images, labels, seed=1, **kw)
    assert torch.equal(again[0].index, train.index) and torch.equal(again[1].index, test.index)
    assert not torch.equal(other[1].index, test.index)
    # the test sources are the test part of split_dataset_random with the same seed
    from trainerlib.datasets import split_dataset_random
    _, reference = split_dataset_random(range(len(images)), len(images) - n_test, seed=0)
    assert test_ids <= {reference[i] for i in range(len(reference))}


def test_composites_batch_through_the_iterator():
    images, labels = get_digits().datasets
    data = Composites(images, labels, torch.tensor([[0, 1], [2, 3], [4, 5]]))
    batch = SerialIterator(data, 2, shuffle=False).next()
    x, t = batch.arrays
    assert torch.equal(t, torch.stack([labels[:2], labels[2:4]]))
    assert torch.equal(x[1], torch.cat([images[2], images[3]], dim=2))
    with pytest.raises(ValueError, match='int64'):
        Composites(images, labels, torch.tensor([0, 1]))


# -- the recipe --------------------------------------------------------------------------------

def predict(cfg, snapshot_path):
    """Per-head test accuracy of the weights in a snapshot, computed here independently."""
    _, test, n_classes, _, _ = multi_head.load_data(cfg)
    models = load_state(str(snapshot_path))['updater']['models']
    trunk = multi_head.Trunk(test.image_shape, cfg['model']['channels'], cfg['model']['features'])
    trunk.load_state_dict(models['trunk'])
    heads = multi_head.build_heads(cfg, n_classes)
    x, t = test.get_batch(slice(None))
    positions = multi_head.position_names(t.shape[1])
    targets = {name: t[:, k] for k, name in enumerate(positions)}
    targets['sum'] = t.sum(1)
    with torch.no_grad():
        features = trunk(x)
        hits = {}
        for name, head in heads.items():
            head.module.load_state_dict(models[name])
            hits[name] = head.module(features).argmax(1) == targets[name]
    accuracy = {name: hit.float().mean().item() for name, hit in hits.items()}
    all_correct = torch.stack([hits[name] for name in positions], 1).all(1)
    return accuracy, all_correct.float().mean().item()


def test_two_digits_and_their_sum(tmp_path, capsys):
    out = tmp_path / 'run'
    assert multi_head.main(TINY + ['--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    cfg = load_config(str(out / 'config.yaml'), schema_of(multi_head))
    assert cfg['recipe'] == 'multi_head' and cfg['data']['positions'] == 2
    summary, log = read_json(out / 'summary.json'), read_json(out / 'log')
    heads = ['pos1', 'pos2', 'sum']
    assert summary['heads'] == heads and summary['image_shape'] == [1, 8, 16]
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, ITERS), (2, 2 * ITERS)]
    assert (summary['train_sources'], summary['test_sources']) == (1438, 359)
    for entry in log:   # every head: its training loss/accuracy and its test accuracy
        for name in heads:
            assert {f'{name}/loss', f'{name}/accuracy', f'validation/{name}/accuracy',
                    f'validation/{name}/loss'} <= entry.keys()
        # a composite with every position right also has the right sum
        assert entry['validation/main/sum_from_positions'] >= entry['validation/main/all_correct']
    assert summary['test_accuracy'] == {n: log[-1][f'validation/{n}/accuracy'] for n in heads}
    assert summary['test_all_correct'] == log[-1]['validation/main/all_correct']
    # it learned: chance is 0.1 per position (about 0.1 for the most common sum)
    assert min(summary['test_accuracy']['pos1'], summary['test_accuracy']['pos2']) > 0.8
    assert summary['test_all_correct'] > 0.6 and summary['test_accuracy']['sum'] > 0.12
    # the finding: summing the position heads' answers beats the head that learns the sum
    assert summary['test_sum_from_positions'] > summary['test_accuracy']['sum'] + 0.3
    # the Evaluator's numbers are those of the saved weights on the test composites
    accuracy, all_correct = predict(cfg, out / f'snapshot_iter_{2 * ITERS}')
    for name in heads:
        assert summary['test_accuracy'][name] == pytest.approx(accuracy[name], abs=1e-6)
    assert summary['test_all_correct'] == pytest.approx(all_correct, abs=1e-6)
    # K + 1 optimizers (trunk and one per head), each stepped once per iteration
    optimizers = load_state(str(out / f'snapshot_iter_{2 * ITERS}'))['updater']['optimizers']
    assert sorted(optimizers) == ['pos1', 'pos2', 'sum', 'trunk']
    for state in optimizers.values():
        assert {float(s['step']) for s in state['state'].values()} == {2 * ITERS}
    for png in ('accuracy.png', 'loss.png', 'samples.png'):
        assert (out / png).read_bytes()[:4] == b'\x89PNG'
    assert f"pos1 {summary['test_accuracy']['pos1']:.4f}" in stdout


def test_positions_without_a_sum_head(tmp_path, capsys):
    out = tmp_path / 'run'
    argv = TINY + ['--set', 'data.positions=3', '--set', 'heads.sum=false', '--set',
                   'train.epochs=1', '--set', 'data.overlap=2', '--out', str(out)]
    assert multi_head.main(argv) == 0
    summary = read_json(out / 'summary.json')
    assert summary['heads'] == ['pos1', 'pos2', 'pos3'] and summary['image_shape'] == [1, 8, 20]
    assert not any(key.startswith('sum/') for key in read_json(out / 'log')[-1])
    assert 'sum head' not in capsys.readouterr().out


def test_resume_continues_a_finished_run(tmp_path, capsys):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert multi_head.main(TINY + ['--out', str(straight)]) == 0
    assert multi_head.main(TINY + ['--set', 'train.epochs=1', '--out', str(resumed)]) == 0
    assert multi_head.main(TINY + ['--out', str(resumed), '--resume']) == 0
    capsys.readouterr()
    log = read_json(resumed / 'log')
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, ITERS), (2, 2 * ITERS)]
    assert without_time(log) == without_time(read_json(straight / 'log'))
    a, b = read_json(straight / 'summary.json'), read_json(resumed / 'summary.json')
    assert {k: v for k, v in a.items() if k != 'elapsed_time'} == \
        {k: v for k, v in b.items() if k != 'elapsed_time'}
    assert yaml.safe_load((resumed / 'config.yaml').read_text())['train']['epochs'] == 2



@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'heads.sums=false'], ["unknown config key 'heads.sums'", "'heads.sum'"]),
    (['--set', 'data.positions=three'], ["'data.positions'", 'expects int']),
    (['--set', 'heads.sum=maybe'], ["'heads.sum'", 'expects bool']),
    (['--set', 'dataset=cifar'], ["'dataset'", "'mnist-test', 'kmnist-test', 'digits'"]),
    (['--set', 'data.positions=1'], ["'data.positions'", 'between 2 and 5']),
    (['--set', 'data.overlap=8', '--set', 'dataset=digits'],
     ["'data.overlap'", 'smaller than the image width 8']),
    (['--set', 'data.overlap=-1'], ["'data.overlap'", '>= 0']),
    (['--set', 'heads.sum_weight=0'], ["'heads.sum_weight'", 'heads.sum=false']),
    (['--set', 'train.head_lr=0'], ["'train.head_lr'", '> 0']),
    (['--set', 'data.train_size=0'], ["'data.train_size'", '>= 1']),
    (['--set', 'data.test_fraction=1'], ["'data.test_fraction'", 'between 0 and 1']),
    (['--set', 'data.root=/nonexistent'], ['MNIST file not found', '/nonexistent']),
    (['--device', 'tpu'], ["'device'", "'cpu', 'cuda', 'cuda:N' or 'mps'"]),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    out = tmp_path / 'out'
    assert multi_head.main(argv + ['--out', str(out)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists()  # nothing was written


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    argv = TINY + ['--set', 'train.epochs=1', '--set', 'data.train_size=500', '--out',
                   str(tmp_path)]
    assert multi_head.main(argv) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    assert multi_head.main(argv + ['--set', 'train.epochs=2']) == 2
    assert 'already holds a run' in one_line_error(capsys)
    # resuming with other composites or other heads is refused, before anything is touched
    assert multi_head.main(argv + ['--resume', '--set', 'data.positions=3']) == 2
    assert "'data.positions' is 3 but the run" in one_line_error(capsys)
    assert multi_head.main(argv + ['--resume', '--set', 'heads.sum=false']) == 2
    assert "'heads.sum' is False but the run" in one_line_error(capsys)
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()} == files


@pytest.mark.slow
def test_mnist_position_heads_learn_and_compose_the_sum(tmp_path, capsys):
    """Scaled-down default on real MNIST digits (two positions, 10,000 composites, 2 epochs):
    every position head is accurate on test composites of unseen digits, and adding their
    answers gives the sum far more often than the head trained on the sum itself."""
    argv = ['--set', 'data.positions=2', '--set', 'data.train_size=10000',
            '--set', 'train.epochs=2', '--out', str(tmp_path)]
    assert multi_head.main(argv) == 0
    summary = read_json(tmp_path / 'summary.json')
    assert summary['test_size'] == 2000 and summary['test_sources'] == 2000
    accuracy = summary['test_accuracy']
    assert min(accuracy['pos1'], accuracy['pos2']) > 0.9, accuracy
    assert summary['test_all_correct'] > 0.8
    assert summary['test_sum_from_positions'] > accuracy['sum'] + 0.3, summary
