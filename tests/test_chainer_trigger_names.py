"""Chainer's names on triggers: OnceTrigger.finished, EarlyStoppingTrigger(patients=)."""
import pytest

from trainerlib.triggers import EarlyStoppingTrigger, OnceTrigger


@pytest.mark.parametrize('call_on_resume, expected', [
    # (fired, finished) after: the first call, a second call, load, a call after the load
    (False, [(True, True), (False, True), (None, True), (False, True)]),
    (True, [(True, True), (False, True), (None, False), (True, True)]),
])
def test_once_trigger_finished_follows_chainer(call_on_resume, expected):
    trigger = OnceTrigger(call_on_resume)
    assert trigger.finished is False                 # it will fire at its first call
    seen = []
    for step in ('call', 'call', 'load', 'call'):
        if step == 'load':
            fresh = OnceTrigger(call_on_resume)      # save -> new object -> load
            fresh.load_state_dict(trigger.state_dict())
            trigger = fresh
            seen.append((None, trigger.finished))
        else:
            seen.append((trigger(None), trigger.finished))
    assert seen == expected


@pytest.mark.parametrize('kwargs, patience', [
    ({}, 3), ({'patience': 5}, 5), ({'patients': 7}, 7),
])
def test_early_stopping_patients_is_an_alias_of_patience(kwargs, patience):
    assert EarlyStoppingTrigger(**kwargs).patience == patience


def test_early_stopping_refuses_both_spellings():
    with pytest.raises(TypeError, match="only 'patience'"):
        EarlyStoppingTrigger(patience=2, patients=2)
