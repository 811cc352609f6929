"""The variance_study recipe: moments, a tiny run through main(argv), resume, bad settings."""
from pathlib import Path

import pytest
import torch

pytest.importorskip('matplotlib')

from recipes import variance_study  # noqa: E402
from recipes._variance_study_stats import Moments, compare, draw_moments  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

CONFIG = Path(variance_study.__file__).parent / 'configs' / 'variance_study.yaml'
TINY = ['--set', 'draws=12', '--set', 'reference_draws=24', '--set', 'chunk=5',
        '--set', 'batch_size=8', '--set', 'sbn.units=6', '--set', 'sbn.pretrain_iterations=8',
        '--set', 'vae.hidden=12', '--set', 'vae.latent=2', '--set', 'vae.pretrain_iterations=8']


def test_shipped_config_is_the_defaults():
    schema = schema_of(variance_study)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])


def test_moments_match_torch_in_chunks():
    rows = torch.randn(23, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 0.5])
    chunks = iter(torch.split(rows, 5))
    m = draw_moments(lambda k: next(chunks)[:k], 23, 5)
    assert m.n == 23 and torch.allclose(m.mean, rows.mean(0))
    assert m.total_variance == pytest.approx(float(rows.var(0).sum()))


def test_bias_check_is_one_for_noise_and_large_for_a_bias():
    torch.manual_seed(0)
    truth = torch.randn(500)
    unbiased, biased, reference = Moments(), Moments(), Moments()
    unbiased.add(truth + torch.randn(400, 500))
    biased.add(truth + 1.0 + torch.randn(400, 500))
    reference.add(truth + torch.randn(4000, 500))
    assert compare(unbiased, reference)['bias_check'] == pytest.approx(1.0, abs=0.15)
    assert compare(biased, reference)['bias_check'] > 50


def test_tiny_run_writes_the_table_and_resumes_to_the_same_numbers(tmp_path):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert variance_study.main(TINY + ['--out', str(straight)]) == 0
    summary = read_json(straight / 'summary.json')
    assert set(summary['sbn']) == {'likelihood_ratio', 'likelihood_ratio_moving_average',
                                   'likelihood_ratio_learned'}
    assert set(summary['vae']) == {'likelihood_ratio', 'likelihood_ratio_constant_baseline',
                                   'reparameterization'}
    vae = summary['vae']
    assert vae['reparameterization']['total_variance'] < vae['likelihood_ratio']['total_variance']
    assert (straight / 'variance.png').stat().st_size > 0
    assert (straight / 'sbn' / 'log').is_file() and (straight / 'vae' / 'log').is_file()
    # the same study, its pretraining stopped half-way (a shorter first run), then resumed
    short = [a.replace('pretrain_iterations=8', 'pretrain_iterations=4') for a in TINY]
    assert variance_study.main(short + ['--out', str(resumed)]) == 0
    assert read_json(resumed / 'summary.json')['sbn'] != summary['sbn']
    assert variance_study.main(TINY + ['--out', str(resumed), '--resume']) == 0
    assert without_time(read_json(resumed / 'summary.json')) == without_time(summary)
    for name in ('sbn', 'vae'):   # continued, not redone: the first run's entries are kept
        assert [e['iteration'] for e in read_json(straight / name / 'log')] == [2, 4, 6, 8]
        assert [e['iteration'] for e in read_json(resumed / name / 'log')] == [1, 2, 3, 4, 6, 8]


def test_resume_re_reports_the_same_numbers(tmp_path):
    out = tmp_path / 'run'
    assert variance_study.main(TINY + ['--out', str(out)]) == 0
    first = read_json(out / 'summary.json')
    assert variance_study.main(TINY + ['--out', str(out), '--resume']) == 0
    assert without_time(read_json(out / 'summary.json')) == without_time(first)


@pytest.mark.parametrize('override, message', [
    ('draws=1', "'draws' must be an integer >= 2"),
    ('sbn.units=0', "'sbn.units' must be an integer >= 1"),
    ('vae.lr=-1', "'vae.lr' must be a finite number > 0"),
    ('sbn.decay=1', "'sbn.decay' must be in [0, 1)"),
    ('batch_size=9000', "exceeds the 8000 training images"),
    ('dataset=cifar', 'dataset'),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, override, message):
    assert variance_study.main(['--set', override, '--out', str(tmp_path / 'x')]) == 2
    assert message in one_line_error(capsys)
