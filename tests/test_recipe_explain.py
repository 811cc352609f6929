"""The explain recipe end to end, in-process through ``recipes.explain.main(argv)``."""
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip('sklearn')      # the digits data set comes with scikit-learn
pytest.importorskip('torchvision')  # the PNG grids
pytest.importorskip('matplotlib')

from recipes import classify, explain  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from trainerlib.serialization import load_state  # noqa: E402
from trainerlib.updaters.perturbation_updater import perturb, upsample  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

CONFIG = Path(explain.__file__).parent / 'configs' / 'explain.yaml'
TINY = ['--set', 'dataset=digits', '--set', 'explain.mask_size=4', '--set', 'explain.images=20',
        '--set', 'explain.iterations=6', '--set', 'explain.log_every=3',
        '--set', 'explain.snapshot_every=3']

torch.set_flush_denormal(True)




@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
    """A classify run on digits (CNN, 2 epochs, label smoothing 0.1) to explain."""
    out = tmp_path_factory.mktemp('classify') / 'run'
    assert classify.main(['--set', 'dataset=digits', '--set', 'model=cnn', '--set',
                          'train.epochs=2', '--set', 'train.label_smoothing=0.1',
                          '--out', str(out)]) == 0
    return str(out)


def test_shipped_config_is_the_defaults():
    schema = schema_of(explain)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])


def test_trains_a_classifier_and_explains_digits(tmp_path, capsys):
    out = tmp_path / 'run'
    assert explain.main(TINY + ['--set', 'classifier.train.epochs=2', '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    # out/classifier is a classify run of its own (reusable as classifier.run)
    predictor, ccfg = classify.load_trained(str(out / 'classifier'), 'cnn')
    assert ccfg['train']['label_smoothing'] == 0.1 and ccfg['dataset'] == 'digits'
    assert read_json(out / 'classifier' / 'cnn' / 'final.json')['epochs'] == 2

    summary = read_json(out / 'summary.json')
    assert summary['images'] == 20 and len(summary['per_image']) == 20
    assert summary['iterations'] == 6 and summary['perturbation'] == 'constant'
    assert [e['iteration'] for e in read_json(out / 'log')] == [3, 6]
    assert sorted(p.name for p in out.glob('snapshot_iter_*')) == ['snapshot_iter_3',
                                                                   'snapshot_iter_6']
    for name in ('mask', 'heatmap', 'perturbed', 'overlay', 'explanations', 'loss'):
        assert (out / f'{name}.png').stat().st_size > 0
    from PIL import Image
    assert Image.open(out / 'mask.png').size == (8 * 10 + 2, 3 * 10 + 2)   # 20 tiles of 8x8

    saved = load_state(str(out / 'masks.pt'))
    x, labels, masks = saved['images'], saved['labels'], saved['masks']
    assert masks.shape == (20, 1, 4, 4) and saved['upsampled'].shape == (20, 1, 8, 8)
    assert masks.min() >= 0 and masks.max() <= 1
    torch.testing.assert_close(saved['upsampled'], upsample(masks, (8, 8)))
    torch.testing.assert_close(saved['perturbed'], perturb(x, saved['upsampled'],
                                                           torch.zeros_like(x)))
    with torch.no_grad():
        probs = predictor(x).softmax(1)
        after = predictor(saved['perturbed']).softmax(1)
    assert (probs.argmax(1) == labels).all()           # only correctly classified images
    rows = summary['per_image']
    idx = torch.arange(20)
    torch.testing.assert_close(torch.tensor([r['prob_before'] for r in rows]),
                               probs[idx, labels], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor([r['prob_after'] for r in rows]),
                               after[idx, labels], atol=1e-5, rtol=0)
    deleted = (1 - saved['upsampled']).flatten(1).mean(1)
    torch.testing.assert_close(torch.tensor([r['deleted_fraction'] for r in rows]), deleted,
                               atol=1e-6, rtol=0)
    assert summary['mean_prob_after'] == pytest.approx(sum(r['prob_after'] for r in rows) / 20)
    assert summary['mean_prob_after'] < summary['mean_prob_before']   # 6 steps already help
    assert not summary['confidence']['overconfident']
    assert 'class probability' in stdout and 'training the cnn' in stdout


@pytest.mark.parametrize('perturbation', ['noise', 'blur'])
def test_resume_gives_the_same_log_and_summary(tmp_path, capsys, digits_run, perturbation):
    base = TINY + ['--set', f'classifier.run={digits_run}', '--set',
                   f'explain.perturbation={perturbation}', '--set', 'explain.blur_sigma=1.0']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert explain.main(base + ['--out', str(straight)]) == 0
    assert explain.main(base + ['--set', 'explain.iterations=3', '--out', str(resumed)]) == 0
    assert explain.main(base + ['--out', str(resumed), '--resume']) == 0
    capsys.readouterr()
    log = read_json(resumed / 'log')
    assert [e['iteration'] for e in log] == [3, 6]
    assert without_time(log) == without_time(read_json(straight / 'log'))
    a, b = read_json(straight / 'summary.json'), read_json(resumed / 'summary.json')
    a.pop('elapsed_time'), b.pop('elapsed_time')
    assert a == b
    assert not (resumed / 'classifier').exists()     # a given classifier is not copied
    assert torch.equal(load_state(str(straight / 'masks.pt'))['masks'],
                       load_state(str(resumed / 'masks.pt'))['masks'])


def test_overconfidence_is_warned_and_mitigated(tmp_path, capsys, digits_run):
    # a low threshold flags this (calibrated) classifier: the plumbing of the warning and of
    # init=auto; the real over-confident case is the slow test below
    argv = TINY + ['--set', f'classifier.run={digits_run}', '--set',
                   'classifier.overconfident=0.3', '--out', str(tmp_path / 'run')]
    with pytest.warns(UserWarning, match='over-confident'):
        assert explain.main(argv) == 0
    assert 'warning: the classifier is over-confident' in capsys.readouterr().out
    summary = read_json(tmp_path / 'run' / 'summary.json')
    assert summary['confidence']['overconfident']
    n_above = sum(r['prob_before'] > 0.3 for r in summary['per_image'])
    assert summary['circle_init_images'] == n_above > 0



@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'explain.iteration=3'], ["unknown config key 'explain.iteration'", 'iterations']),
    (['--set', 'explain.images=many'], ["'explain.images'", 'expects int']),
    (['--set', 'explain.perturbation=fog'], ["'explain.perturbation'", "'blur'", "'noise'"]),
    (['--set', 'explain.l1_weight=-1'], ["'explain.l1_weight'", '>= 0']),
    (['--set', 'explain.iterations=0'], ["'explain.iterations'", '>= 1']),
    (['--set', 'explain.constant=grey'], ["'explain.constant'", 'expects float']),
    (['--set', 'classifier.overconfident=2'], ["'classifier.overconfident'", '(0, 1]']),
    (['--set', 'classifier.train.label_smoothing=1.0'],
     ["'classifier.train.label_smoothing'", '[0, 1)']),
    (['--set', 'dataset=digits', '--set', 'explain.mask_size=9'],
     ["'explain.mask_size'", 'image side (8']),
    (['--set', 'classifier.run=/nonexistent/run'], ['/nonexistent/run', 'python -m recipes.classify']),
    (['--set', 'classifier.run=[1, 2]'], ["'classifier.run'", 'expects str or null, got list']),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    assert explain.main(argv + ['--out', str(out)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert [p.name for p in out.iterdir()] == ['notes.txt']   # nothing written
    assert (out / 'notes.txt').read_text() == 'keep me'


def test_classifier_of_other_data_is_refused(tmp_path, capsys, digits_run):
    assert explain.main(['--set', f'classifier.run={digits_run}', '--out', str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert "'digits'" in line and 'set the same dataset' in line
    assert not (tmp_path / 'config.yaml').exists()


@pytest.mark.slow
def test_default_run_explains_mnist(tmp_path, capsys):
    """The finding on the default run: on >= 20 real test images the class probability drops
    below 10% on average while the masks delete at most a third of the image."""
    assert explain.main(['--out', str(tmp_path)]) == 0
    s = read_json(tmp_path / 'summary.json')
    assert s['dataset'] == 'mnist-test' and s['images'] >= 20
    assert s['mean_prob_before'] > 0.5
    assert s['mean_prob_after'] < 0.10, s['mean_prob_after']
    assert s['mean_deleted_fraction'] <= 1 / 3, s['mean_deleted_fraction']
    # where the mask is matters: the same masks shifted by half the image delete little
    assert s['mean_prob_shifted_mask'] > 3 * s['mean_prob_after']
    assert not s['confidence']['overconfident']
    assert yaml.safe_load((tmp_path / 'config.yaml').read_text())['recipe'] == 'explain'


@pytest.mark.slow
def test_overconfident_classifier_stalls_masks_unless_circle_init(tmp_path, capsys):
    """ALGORITHMS.md 2.6 on real data: without label smoothing the classifier saturates on
    many images; masks starting at ones stay there for some of them, the circular init of
    the saturated images (init=auto) fixes it."""
    common = ['--set', 'classifier.train.epochs=3', '--set', 'explain.iterations=150']
    stalled, fixed = tmp_path / 'ones', tmp_path / 'auto'
    with pytest.warns(UserWarning, match='over-confident'):
        assert explain.main(common + ['--set', 'classifier.train.label_smoothing=0',
                                      '--set', 'explain.init=ones', '--out', str(stalled)]) == 0
    with pytest.warns(UserWarning, match='over-confident'):
        assert explain.main(common + ['--set', f'classifier.run={stalled / "classifier"}',
                                      '--set', 'explain.init=auto', '--out', str(fixed)]) == 0
    a, b = read_json(stalled / 'summary.json'), read_json(fixed / 'summary.json')
    assert a['confidence']['images_above_threshold'] >= 5
    assert b['circle_init_images'] == a['confidence']['images_above_threshold']
    stuck = [r for r in a['per_image'] if r['prob_after'] > 0.5]
    # measured: 1 of 24 with torch 2.14.1 (p 0.998, 0.01% deleted), 5 in an earlier environment
    assert len(stuck) >= 1
    assert min(r['deleted_fraction'] for r in stuck) < 0.01   # a mask that never moved
    assert sum(r['prob_after'] > 0.5 for r in b['per_image']) == 0
    # measured with torch 2.14.1: 0.019 (auto) vs 0.059 (ones)
    assert b['mean_prob_after'] < min(0.10, a['mean_prob_after'])
    assert b['mean_deleted_fraction'] <= 1 / 3
