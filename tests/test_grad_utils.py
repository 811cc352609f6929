"""Helpers shared by multi-optimizer updaters."""
import pytest
import torch

from trainerlib.updaters import (AmpContext, clip_grads, parameters_of, requires_grad, step_all,
                                 zero_grad, zero_grads)


def two_optimizers():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    shared = torch.nn.Parameter(torch.ones(2))
    return a, b, shared, [torch.optim.SGD(list(a.parameters()) + [shared], lr=0.1),
                          torch.optim.SGD(list(b.parameters()) + [shared], lr=0.1)]


def backward(a, b, shared):
    (b(a(torch.ones(4, 3)) * shared) * 100).sum().backward()


def test_parameters_of_lists_shared_parameters_once():
    a, b, shared, opts = two_optimizers()
    params = parameters_of(opts)
    assert len(params) == 5 and sum(p is shared for p in params) == 1


def test_clip_grads_clips_the_global_norm_of_all_optimizers():
    a, b, shared, opts = two_optimizers()
    backward(a, b, shared)
    clip_grads(opts, max_norm=1.0)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in parameters_of(opts)))
    torch.testing.assert_close(total, torch.tensor(1.0))
    clip_grads(opts, max_value=0.1)
    assert max(p.grad.abs().max() for p in parameters_of(opts)) <= 0.1


def test_step_all_and_zero_grads():
    a, b, shared, opts = two_optimizers()
    backward(a, b, shared)
    before = [p.detach().clone() for p in parameters_of(opts)]
    step_all(opts, AmpContext(False))
    assert all(not torch.equal(p, q) for p, q in zip(parameters_of(opts), before))
    zero_grads(opts)
    assert all(p.grad is None for p in parameters_of(opts))


class OwnZeroGrad(torch.optim.SGD):
    """An optimizer whose zero_grad does more than clearing (here: counts its calls)."""
    calls = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        OwnZeroGrad.calls += 1
        super().zero_grad(set_to_none)


class RecordFunctionSpy:
    """Stands for torch.autograd.profiler.record_function: counts torch's zero_grad calls."""
    names = []

    def __init__(self, name, args=None):
        RecordFunctionSpy.names.append(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def with_grads(make_opt):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    frozen = torch.nn.Parameter(torch.ones(1))   # no gradient: stays None
    opt = make_opt([{'params': model[0].parameters()},
                    {'params': [*model[1].parameters(), frozen], 'lr': 0.01}])
    model(torch.ones(2, 3)).sum().backward()
    return opt


@pytest.mark.parametrize('make_opt, torch_method_called', [
    (lambda groups: torch.optim.SGD(groups, lr=0.1), False),
    (lambda groups: torch.optim.Adam(groups, foreach=True), False),
    (lambda groups: OwnZeroGrad(groups, lr=0.1), True),          # overridden in the class
])
def test_zero_grad_clears_every_gradient_calling_only_overrides(
        monkeypatch, make_opt, torch_method_called):
    monkeypatch.setattr(torch.autograd.profiler, 'record_function', RecordFunctionSpy)
    RecordFunctionSpy.names, OwnZeroGrad.calls = [], 0
    opt = with_grads(make_opt)
    assert any(p.grad is not None for g in opt.param_groups for p in g['params'])
    zero_grad(opt)
    assert all(p.grad is None for g in opt.param_groups for p in g['params'])
    assert bool(RecordFunctionSpy.names) == torch_method_called
    assert OwnZeroGrad.calls == int(isinstance(opt, OwnZeroGrad))


def test_zero_grad_calls_a_zero_grad_set_on_the_instance():
    opt = with_grads(lambda groups: torch.optim.SGD(groups, lr=0.1))
    calls = []
    opt.zero_grad = lambda set_to_none=True: calls.append(set_to_none)
    zero_grad(opt)
    assert calls == [True]


def test_zero_grad_keeps_torchs_profiler_range_while_a_profiler_runs():
    opt = with_grads(lambda groups: torch.optim.SGD(groups, lr=0.1))
    with torch.autograd.profiler.profile() as prof:
        zero_grad(opt)
    assert 'Optimizer.zero_grad#SGD.zero_grad' in {e.name for e in prof.function_events}
    assert all(p.grad is None for g in opt.param_groups for p in g['params'])


def test_requires_grad_toggles_and_restores():
    a, b, shared, _ = two_optimizers()
    a.bias.requires_grad_(False)
    with requires_grad(a, False):
        assert not any(p.requires_grad for p in a.parameters())
        backward(a, b, shared)
    assert a.weight.grad is None and b.weight.grad is not None
    assert a.weight.requires_grad and not a.bias.requires_grad


def test_an_overflow_in_one_optimizer_makes_every_optimizer_skip():
    a, b, shared, _ = two_optimizers()
    # weight decay: an optimizer stepping on zeroed gradients would still move
    opts = [torch.optim.SGD(list(a.parameters()) + [shared], lr=0.1, weight_decay=0.1),
            torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=0.1)]
    amp = AmpContext('float16', 'cpu')
    amp.scale(b(a(torch.ones(4, 3)) * shared).sum()).backward()
    a.weight.grad[0, 0] = float('inf')            # only the first optimizer overflowed
    before = [p.detach().clone() for p in parameters_of(opts)]
    clip_grads(opts, max_norm=1.0, amp=amp)
    step_all(opts, amp)
    assert all(torch.equal(p, q) for p, q in zip(parameters_of(opts), before))
    assert amp.scaler.get_scale() < 65536.0        # the scale was lowered once
