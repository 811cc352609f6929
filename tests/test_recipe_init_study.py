"""The init_study recipe: initialisers, signal at init, runs through ``main(argv)``, errors."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

pytest.importorskip('sklearn')  # the digits data set comes with scikit-learn
pytest.importorskip('matplotlib')

from recipes import init_study  # noqa: E402
from recipes._init_study_net import PlainMLP, init_linear, signal_stats  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from trainerlib.serialization import load_state  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

torch.set_flush_denormal(True)  # the Glorot nets' signals vanish into denormals

CONFIG = Path(init_study.__file__).parent / 'configs' / 'init_study.yaml'
TINY = ['--set', 'model.width=16', '--set', 'model.shallow_depth=1',
        '--set', 'model.deep_depth=3', '--set', 'train.log_every=5',
        '--set', 'train.eval_every=10', '--set', 'train.snapshot_every=10',
        '--set', 'stats.samples=64']
RUNS = ('glorot_1', 'he_1', 'glorot_3', 'he_3')




def files_of(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob('*') if p.is_file()}


def digits_config(*overrides):
    return load_config(None, schema_of(init_study), list(overrides))


def test_shipped_config_is_the_defaults():
    schema = schema_of(init_study)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])


@pytest.mark.parametrize('init, distribution, fan_in, fan_out, expected_std', [
    ('glorot', 'normal', 512, 512, math.sqrt(2 / 1024)),
    ('glorot', 'uniform', 512, 512, math.sqrt(2 / 1024)),
    ('glorot', 'normal', 256, 1024, math.sqrt(2 / 1280)),   # both fans
    ('he', 'normal', 512, 512, math.sqrt(2 / 512)),
    ('he', 'uniform', 512, 512, math.sqrt(2 / 512)),
    ('he', 'normal', 256, 1024, math.sqrt(2 / 256)),         # fan-in only
])
def test_init_linear_variance_and_zero_bias(init, distribution, fan_in, fan_out, expected_std):
    torch.manual_seed(0)
    layer = torch.nn.Linear(fan_in, fan_out)
    init_linear(layer, init, distribution)
    assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert layer.weight.mean().abs().item() < 0.05 * expected_std
    assert torch.equal(layer.bias, torch.zeros(fan_out))
    if distribution == 'uniform':  # U[-a, a] with a = sqrt(3) std
        assert layer.weight.abs().max().item() <= math.sqrt(3) * expected_std * 1.0001


def test_init_linear_refuses_unknown_names():
    with pytest.raises(ValueError, match='glorot'):
        init_linear(torch.nn.Linear(2, 2), 'lecun')


@pytest.mark.parametrize('seed', [0, 1])
def test_signal_at_init_of_30_layers(seed):
    """ALGORITHMS.md §4.4.1: He keeps the signal, Glorot's vanishes as 2^(-L/2)."""
    train, _, n_classes = init_study.load_data(digits_config())
    x, t = train.datasets[0][:512], train.datasets[1][:512]
    # standardised on the train split: each input unit mean 0, std 1 (a few near-constant
    # border pixels less: their std is divided by std + 1e-3)
    std = train.datasets[0].std(0)
    assert train.datasets[0].mean(0).abs().max().item() < 1e-4
    assert bool((std <= 1).all()) and (std > 0.95).float().mean().item() > 0.75
    stats = {}
    for init in ('glorot', 'he'):
        torch.manual_seed(seed)
        net = PlainMLP(64, n_classes, 30, 128, init)
        stats[init] = signal_stats(net, x, t)
        assert all(p.grad is None for p in net.parameters())
        assert len(stats[init]['act_std']) == len(stats[init]['grad_std']) == 31
    he, glorot = stats['he'], stats['glorot']
    assert 0.3 <= he['act_std'][-1] <= 3
    assert glorot['act_std'][-1] < 1e-3
    assert all(0.05 <= r ** 2 <= 20 for r in he['act_rms_ratio'][:-1])
    assert glorot['act_rms_ratio'][-2] ** 2 < 1e-6     # last hidden layer's second moment
    # each Glorot layer halves the second moment (square layers: n Var[w] = 1, ReLU halves)
    ratios = [b / a for a, b in zip(glorot['act_rms_ratio'][1:29], glorot['act_rms_ratio'][2:30])]
    assert sum(ratios) / len(ratios) == pytest.approx(math.sqrt(0.5), rel=0.1)
    # and the gradient reaching the first layer is orders of magnitude smaller
    assert glorot['grad_std'][0] < 1e-4 * he['grad_std'][0]


def test_tiny_study_end_to_end(tmp_path, capsys):
    out = tmp_path / 'run'
    assert init_study.main(TINY + ['--set', 'train.steps=20', '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    config = yaml.safe_load((out / 'config.yaml').read_text())
    assert config['recipe'] == 'init_study' and config['model']['deep_depth'] == 3
    summary = read_json(out / 'summary.json')
    assert set(summary['runs']) == set(RUNS)
    assert (summary['train_size'], summary['test_size']) == (1438, 359)
    assert (out / 'init_study.png').stat().st_size > 10_000
    cfg = digits_config(*TINY[1::2])
    train, test, _ = init_study.load_data(cfg)
    for name in RUNS:
        run = summary['runs'][name]
        log = read_json(out / name / 'log')
        assert [e['iteration'] for e in log] == [5, 10, 15, 20]
        assert run['curve'] == [[e['iteration'], e['main/loss']] for e in log]
        assert sorted(p.name for p in (out / name).glob('snapshot_iter_*')) == \
            ['snapshot_iter_10', 'snapshot_iter_20']
        assert run['iterations'] == 20 and run['depth'] == int(name.split('_')[1])
        # the reported numbers are those of the final weights on the whole splits
        torch.manual_seed(0)
        net = PlainMLP(64, 10, run['depth'], 16, run['init'])
        assert signal_stats(net, train.datasets[0][:64], train.datasets[1][:64]) == \
            run['init_stats']
        state = load_state(str(out / name / 'snapshot_iter_20'))['updater']['models']['main']
        net.load_state_dict({k[len('predictor.'):]: v for k, v in state.items()})
        with torch.no_grad():
            for split, key in ((train, 'train'), (test, 'test')):
                logits = net(split.datasets[0])
                assert run[f'{key}_loss'] == pytest.approx(
                    F.cross_entropy(logits, split.datasets[1]).item(), rel=1e-5)
                accuracy = (logits.argmax(1) == split.datasets[1]).float().mean().item()
                assert run[f'{key}_accuracy'] == pytest.approx(accuracy, abs=1e-6)
        assert f"{name:<12}{run['init_output_std']:>14.2e}{run['train_loss']:>10.4f}" in stdout
    verdict = summary['verdict']
    losses = {n: summary['runs'][n]['train_loss'] for n in RUNS}
    assert verdict['deep_glorot_stalled'] == (losses['glorot_3'] > math.log(10) - 0.05)
    assert verdict['deep_he_trained'] == (losses['he_3'] < 1.0)
    assert verdict['reproduced'] == all(verdict[k] for k in (
        'deep_glorot_stalled', 'deep_he_trained', 'shallow_glorot_trained',
        'shallow_he_trained'))
    assert verdict['text'] in stdout


def test_resume_gives_the_same_runs(tmp_path, capsys):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert init_study.main(TINY + ['--set', 'train.steps=20', '--out', str(straight)]) == 0
    assert init_study.main(TINY + ['--set', 'train.steps=10', '--out', str(resumed)]) == 0
    assert [e['iteration'] for e in read_json(resumed / 'he_3' / 'log')] == [5, 10]
    assert init_study.main(TINY + ['--set', 'train.steps=20', '--out', str(resumed),
                                   '--resume']) == 0
    capsys.readouterr()
    for name in RUNS:
        assert without_time(read_json(resumed / name / 'log')) == \
            without_time(read_json(straight / name / 'log'))
    assert without_time(read_json(resumed / 'summary.json')) == \
        without_time(read_json(straight / 'summary.json'))
    # resuming a finished run re-reports it without training further
    before = read_json(resumed / 'summary.json')
    assert init_study.main(TINY + ['--set', 'train.steps=20', '--out', str(resumed),
                                   '--resume']) == 0
    assert without_time(read_json(resumed / 'summary.json')) == without_time(before)



@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'model.widht=64'], ["unknown config key 'model.widht'", "'model.width'"]),
    (['--set', 'train.steps=many'], ["'train.steps'", 'expects int']),
    (['--set', 'model.distribution=laplace'], ["'model.distribution'", "'normal', 'uniform'"]),
    (['--set', 'train.optimizer=rmsprop'], ["'train.optimizer'", "'sgd', 'adam'"]),
    (['--set', 'dataset=cifar10'], ["'dataset'", "'digits', 'mnist-test', 'kmnist-test'"]),
    (['--set', 'train.lr=0'], ["'train.lr'", '> 0']),
    (['--set', 'train.momentum=1'], ["'train.momentum'", '[0, 1)']),
    (['--set', 'model.deep_depth=0'], ["'model.deep_depth'", '>= 1']),
    (['--set', 'model.shallow_depth=30'], ["'model.shallow_depth'", "'model.deep_depth'"]),
    (['--set', 'threads=-1'], ["'threads'", '>= 0']),
    (['--set', 'data.test_fraction=1'], ["'data.test_fraction'", 'between 0 and 1']),
    (['--set', 'dataset=mnist-test', '--set', 'data.root=/nonexistent'],
     ['MNIST file not found', '/nonexistent']),
    (['--config', '/nonexistent/study.yaml'], ['/nonexistent/study.yaml', 'not found']),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    (tmp_path / 'notes.txt').write_text('mine')
    before = files_of(tmp_path)
    assert init_study.main(argv + ['--out', str(tmp_path)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line
    assert files_of(tmp_path) == before  # nothing written, nothing changed


def test_existing_run_is_kept(tmp_path, capsys):
    argv = TINY + ['--set', 'train.steps=10', '--out', str(tmp_path)]
    assert init_study.main(argv) == 0
    capsys.readouterr()
    before = files_of(tmp_path)
    assert init_study.main(argv) == 2
    assert 'already holds a run' in one_line_error(capsys)
    # resuming with other nets (or other initial weights) is refused before anything runs
    for change, key in (('model.width=32', "'model.width' is 32 but the run"),
                        ('seed=1', "'seed'")):
        assert init_study.main(argv + ['--resume', '--set', change]) == 2
        assert key in one_line_error(capsys)
    assert files_of(tmp_path) == before


@pytest.mark.slow
def test_default_study_reproduces_the_finding(tmp_path, capsys):
    """The seed's claim with the default settings: 30 layers Glorot stalls, He trains."""
    assert init_study.main(['--out', str(tmp_path)]) == 0
    summary = read_json(tmp_path / 'summary.json')
    runs = summary['runs']
    assert summary['verdict']['reproduced'], summary['verdict']['text']
    assert runs['glorot_30']['train_loss'] > 2.25                # ln 10 = 2.3026: chance
    assert runs['glorot_30']['test_accuracy'] < 0.2
    assert runs['he_30']['train_loss'] < 1.0 and runs['he_30']['test_accuracy'] > 0.6
    for init in ('glorot', 'he'):
        assert runs[f'{init}_10']['train_loss'] < 1.0
        assert runs[f'{init}_10']['test_accuracy'] > 0.75
    # He starts earlier at both depths; the 30-layer Glorot signal has vanished at init
    for depth in (10, 30):
        assert runs[f'he_{depth}']['curve'][4][1] < runs[f'glorot_{depth}']['curve'][4][1]
    assert runs['glorot_30']['init_output_std'] < 1e-3 < 0.3 < runs['he_30']['init_output_std']
    assert (tmp_path / 'init_study.png').is_file()
