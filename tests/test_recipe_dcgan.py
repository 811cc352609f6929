"""The dcgan recipe: networks, quality metrics, and runs end to end through ``main(argv)``."""
import json
import struct
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip('sklearn')      # the digits data set comes with scikit-learn
pytest.importorskip('torchvision')  # sample grids

from recipes import classify, dcgan  # noqa: E402
from recipes._dcgan_nets import Discriminator, Generator, dcgan_init, init_output_bias  # noqa: E402
from recipes._dcgan_quality import Judge, frechet_distance  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402

CONFIG = Path(dcgan.__file__).parent / 'configs' / 'dcgan.yaml'
# digits, a tiny network, few samples: the whole run takes seconds
TINY = ['--set', 'dataset=digits', '--set', 'model.width=4', '--set', 'model.fc=16',
        '--set', 'model.z_dim=8', '--set', 'quality.classifier_epochs=2',
        '--set', 'quality.n_samples=100', '--set', 'train.batch_size=128',
        '--set', 'train.plot_every=4']


def read_json(path):
    return json.loads(Path(path).read_text())


def without_time(log):
    return [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in log]


def one_line_error(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


def files_of(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob('*') if p.is_file()}


def test_shipped_config_is_the_defaults():
    schema = schema_of(dcgan)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])


@pytest.mark.parametrize('width, fc, z_dim', [(64, 1024, 100), (8, 32, 5)])
def test_networks_shapes_ranges_and_init(width, fc, z_dim):
    torch.manual_seed(0)
    gen, dis = Generator(z_dim, width, fc).apply(dcgan_init), Discriminator(width).apply(dcgan_init)
    images = gen(torch.randn(6, z_dim))
    assert images.shape == (6, 1, 28, 28)
    assert images.min() >= 0 and images.max() <= 1          # the seed's sigmoid output
    assert dis(images).shape == (6,)                         # one logit per image
    conv = gen.upsample[1][0].weight                         # ConvT(2w -> w, 4x4)
    assert abs(conv.std().item() - 0.02) < 0.004
    assert abs(gen.fc[1].weight.mean().item() - 1) < 0.01   # BatchNorm1d weight ~ N(1, 0.02)
    assert not isinstance(dis.features[0][1], torch.nn.BatchNorm2d)   # no BN on D's input
    assert abs(images.mean().item() - 0.5) < 0.05                     # grey at init...
    init_output_bias(gen, 0.13)
    assert abs(gen(torch.randn(6, z_dim)).mean().item() - 0.13) < 0.03   # ...or the data's mean


def test_frechet_distance_of_shifted_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, b) < 0.02
    # same covariance, means 2 apart in one coordinate: the distance is |dmu|^2 = 4
    assert frechet_distance(a, b + torch.tensor([2.0, 0, 0], dtype=torch.float64)) == \
        pytest.approx(4.0, abs=0.1)
    # scaled by 3: Tr(S + 9S - 2*3S) = 4 Tr(S) = 12 for unit covariance
    assert frechet_distance(a, 3 * b) == pytest.approx(12.0, rel=0.05)


class Pixels(torch.nn.Module):
    """A 'classifier' of 1x2x2 images: logits = 10 * (the 4 pixels), via one Linear."""

    def __init__(self):
        super().__init__()
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(10 * torch.eye(4))

    def forward(self, x):
        return self.fc(self.flatten(x))


def test_judge_metrics_by_hand():
    one_hot = torch.eye(4).reshape(4, 1, 2, 2)
    judge = Judge(Pixels(), one_hot.repeat(5, 1, 1, 1), classes=[0, 1, 2, 3], input_size=(2, 2))
    p_top = torch.softmax(torch.tensor([10.0, 0, 0, 0]), 0)
    two = judge.metrics(one_hot[[0, 0, 1, 1]])               # only classes 0 and 1
    assert two['classes_covered'] == 2 and two['n_classes'] == 4
    assert two['class_histogram'] == {'0': 2, '1': 2, '2': 0, '3': 0}
    assert two['mean_max_prob'] == pytest.approx(p_top[0].item(), rel=1e-5)
    assert two['class_entropy'] == pytest.approx(torch.log(torch.tensor(2.0)).item())
    every = judge.metrics(one_hot)
    assert every['classes_covered'] == 4
    # near-one-hot predictions spread evenly over k classes: the score is close to k
    assert 1.9 < two['classifier_score'] < 2.0 < 3.9 < every['classifier_score'] < 4.0
    # a 4x4 image is resized (antialiased) to the classifier's 2x2 input
    big = torch.zeros(1, 1, 4, 4)
    big[..., :2, :2] = 1
    assert judge.metrics(big.repeat(2, 1, 1, 1))['class_histogram']['0'] == 2


def test_digits_run_writes_everything(tmp_path, capsys):
    out = tmp_path / 'run'
    assert dcgan.main(TINY + ['--set', 'train.epochs=2', '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    for name in ('config.yaml', 'log', 'loss.png', 'real_samples.png', 'generator.pt',
                 'samples/epoch_001.png', 'samples/epoch_002.png', 'snapshot_iter_23',
                 'classifier/best_model.pt', 'classifier/final.json', 'summary.json'):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / 'config.yaml').read_text())['recipe'] == 'dcgan'
    log, summary = read_json(out / 'log'), read_json(out / 'summary.json')
    # an epoch ends at the batch that crosses the end of the data (as in Chainer)
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, 12), (2, 23)]  # 1438 / 128
    assert summary['iterations'] == 23 and summary['train_size'] == 1438
    # the final metrics are of the same fixed noise as the last epoch's log entry
    for key in dcgan.METRICS:
        assert log[-1][f'quality/{key}'] == pytest.approx(summary['samples'][key], rel=1e-5)
    for name in ('real_train', 'real_test', 'uniform_noise'):
        m = summary['reference'][name]
        assert m['n_images'] == 100 and m['n_classes'] == 10
        assert 1 <= m['classifier_score'] <= 10 and m['frechet_distance'] >= 0
    real, noise = summary['reference']['real_test'], summary['reference']['uniform_noise']
    assert real['classes_covered'] == 10 and real['mean_max_prob'] > noise['mean_max_prob']
    assert summary['reference']['real_train']['frechet_distance'] < noise['frechet_distance']
    assert summary['classifier']['test_accuracy'] == pytest.approx(
        read_json(out / 'classifier' / 'final.json')['best_test_accuracy'], abs=1e-6)
    assert summary['finding']['target_mean_max_prob'] == 0.8
    assert 'DCGAN samples  mean max-prob' in stdout and 'finding:' in stdout


def test_resume_gives_the_same_log_and_summary(tmp_path, capsys):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert dcgan.main(TINY + ['--set', 'train.epochs=2', '--out', str(straight)]) == 0
    assert dcgan.main(TINY + ['--set', 'train.epochs=1', '--out', str(resumed)]) == 0
    assert dcgan.main(TINY + ['--set', 'train.epochs=2', '--out', str(resumed), '--resume']) == 0
    assert 'classifier: already trained' in capsys.readouterr().out
    assert without_time(read_json(resumed / 'log')) == without_time(read_json(straight / 'log'))
    a, b = read_json(straight / 'summary.json'), read_json(resumed / 'summary.json')
    assert a['samples'] == b['samples'] and a['reference'] == b['reference']
    assert a['iterations'] == b['iterations'] == 23


def test_given_classifier_is_used_and_checked(tmp_path, capsys):
    judge_dir = tmp_path / 'judge'
    assert classify.main(['--set', 'dataset=digits', '--set', 'model=cnn',
                          '--set', 'train.epochs=2', '--out', str(judge_dir)]) == 0
    out = tmp_path / 'run'
    assert dcgan.main(TINY + ['--set', 'train.epochs=1', '--set',
                              f'quality.classifier={judge_dir}', '--out', str(out)]) == 0
    summary = read_json(out / 'summary.json')
    assert summary['classifier']['source'] == str(judge_dir)
    assert not (out / 'classifier').exists()
    assert summary['classifier']['test_accuracy'] == pytest.approx(
        read_json(judge_dir / 'cnn' / 'final.json')['best_test_accuracy'], abs=1e-6)
    capsys.readouterr()
    # a judge trained on another split would have seen this run's test images
    other = tmp_path / 'other'
    assert dcgan.main(TINY + ['--set', 'data.split_seed=1', '--set',
                              f'quality.classifier={judge_dir}', '--out', str(other)]) == 2
    line = one_line_error(capsys)
    assert 'quality.classifier' in line and 'quality.classifier=null' in line
    assert not other.exists()


def write_idx(path, array, magic):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack('>I', magic) + b''.join(struct.pack('>I', d) for d in array.shape)
    path.write_bytes(header + array.astype('uint8').tobytes())


def fake_emnist(root, split='digits', n=(30, 20)):
    """EMNIST-format files as torchvision keeps them: images stored transposed."""
    import numpy as np
    for part, count in zip(('train', 'test'), n):
        upright = np.zeros((count, 28, 28), dtype=np.uint8)
        upright[:, 0, :] = 255                                # a bright top row
        labels = np.arange(count) % 10
        raw = Path(root) / 'EMNIST' / 'raw'
        write_idx(raw / f'emnist-{split}-{part}-images-idx3-ubyte', upright.transpose(0, 2, 1),
                  2051)
        write_idx(raw / f'emnist-{split}-{part}-labels-idx1-ubyte', labels, 2049)


def test_emnist_is_loaded_upright(tmp_path):
    fake_emnist(tmp_path)
    cfg = load_config(None, schema_of(dcgan), ['dataset=emnist', f'data.root={tmp_path}',
                                               'data.emnist_split=digits', 'data.max_train=25'])
    dcgan.check_values(cfg)
    data = dcgan.load_data(cfg)
    x = data['gan_train'].datasets[0]
    assert x.shape == (25, 1, 28, 28)
    assert (x[:, 0, 0, :] == 1).all() and x[:, 0, 1:, :].sum() == 0   # top row, not left column
    assert data['classes'] == list(range(10)) and data['n_classes'] == 10


@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'train.epoch=3'], ["unknown config key 'train.epoch'", 'epochs']),
    (['--set', 'model.width=wide'], ["'model.width'", 'expects int']),
    (['--set', 'dataset=cifar'], ["'dataset'", "'mnist-test', 'kmnist-test', 'digits', 'emnist'"]),
    (['--set', 'data.emnist_split=bytes'], ["'data.emnist_split'", "'balanced'"]),
    (['--set', 'train.epochs=0'], ["'train.epochs'", '>= 1']),
    (['--set', 'quality.n_samples=1'], ["'quality.n_samples'", '>= 2']),
    (['--set', 'train.beta1=1.0'], ["'train.beta1'", '[0, 1)']),
    (['--set', 'train.real_label=0'], ["'train.real_label'", '(0, 1]']),
    (['--set', 'train.lr_gen=0'], ["'train.lr_gen'", '> 0']),
    (['--set', 'quality.classifier=/nonexistent/judge'], ['/nonexistent/judge', 'recipes.classify']),
    (['--set', 'dataset=emnist'], ['data.root', 'data.download=true']),
    (['--set', 'dataset=emnist', '--set', 'data.root=EMPTY'], ['not available', 'data.download=true',
                                                               'dataset=mnist-test']),
    (['--set', 'dataset=kmnist-test', '--set', 'data.root=EMPTY'], ['not found']),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    empty = tmp_path / 'empty'
    empty.mkdir()
    argv = [a.replace('EMPTY', str(empty)) for a in argv]
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')                    # something already there
    assert dcgan.main(argv + ['--out', str(out)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert files_of(out) == {out / 'notes.txt': b'mine'}      # nothing written or changed
    assert list(empty.iterdir()) == []


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    argv = TINY + ['--set', 'train.epochs=1', '--out', str(tmp_path)]
    assert dcgan.main(argv) == 0
    capsys.readouterr()
    before = files_of(tmp_path)
    assert dcgan.main(argv) == 2
    assert 'already holds a run' in one_line_error(capsys)
    assert dcgan.main(argv + ['--resume', '--set', 'model.width=8']) == 2
    assert "'model.width' is 8 but the run" in one_line_error(capsys)
    assert files_of(tmp_path) == before


@pytest.mark.slow
def test_default_run_learns_every_class(tmp_path, capsys):
    """The default run (24 epochs on MNIST-test): samples of every class, far from noise,
    classified with mean max-probability >= 0.8 (measured 0.816; real test images 0.955)."""
    assert dcgan.main(['--out', str(tmp_path)]) == 0
    summary = read_json(tmp_path / 'summary.json')
    samples, noise = summary['samples'], summary['reference']['uniform_noise']
    assert summary['dataset'] == 'mnist-test' and samples['n_images'] == 1000
    assert summary['classifier']['test_accuracy'] > 0.95
    assert samples['classes_covered'] == samples['n_classes'] == 10
    assert summary['finding']['all_classes_covered']
    assert samples['frechet_distance'] < 0.2 * noise['frechet_distance']
    assert samples['classifier_score'] > noise['classifier_score'] + 2
    assert samples['mean_max_prob'] >= 0.8 and summary['finding']['mean_max_prob_reached']
