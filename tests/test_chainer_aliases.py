"""Chainer's spellings of LogReport's and PlotReport's arguments, and PlotReport.available()."""
import builtins

import pytest

import extensions as E


@pytest.mark.parametrize('make, attribute, expected', [
    (lambda: E.LogReport(log_name='my_log'), '_filename', 'my_log'),
    (lambda: E.LogReport(), '_filename', 'log'),
    (lambda: E.PlotReport(['main/loss'], file_name='loss.png'), '_filename', 'loss.png'),
    (lambda: E.PlotReport(['main/loss']), '_filename', 'plot.png'),
])
def test_filename_aliases(make, attribute, expected):
    assert getattr(make(), attribute) == expected


@pytest.mark.parametrize('make, match', [
    (lambda: E.LogReport(filename='a', log_name='b'), 'not both'),
    (lambda: E.PlotReport(['main/loss'], filename='a.png', file_name='b.png'), 'not both'),
])
def test_both_spellings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_plot_report_available_says_whether_matplotlib_imports(monkeypatch):
    assert E.PlotReport.available() is True
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == 'matplotlib' or name.startswith('matplotlib.'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_matplotlib)
    assert E.PlotReport.available() is False
