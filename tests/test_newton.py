"""trainerlib.optimizers.Newton: exact on quadratics, fast on Rosenbrock, damping, fallback,
errors, and a save -> new optimizer -> load round trip that continues identically."""
import io
import math

import pytest
import torch

from trainerlib.optimizers import Newton, NewtonStepError

DTYPE = torch.float64
A = torch.tensor([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]], dtype=DTYPE)  # SPD
B = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)


def rosenbrock(p, a=1.0, b=100.0):
    return (a - p[0]) ** 2 + b * (p[1] - p[0] ** 2) ** 2


def point(*values):
    return torch.nn.Parameter(torch.tensor(values, dtype=DTYPE))


def quadratic(x):
    """0.5 xᵀAx − bᵀx: minimum at A⁻¹b, gradient Ax − b, Hessian A."""
    return 0.5 * x @ A @ x - B @ x


def test_quadratic_is_solved_in_one_step_across_parameters():
    # three coordinates split over two parameters (and two param groups): one system
    head, tail = point(0.3, -0.7), point(2.0)
    opt = Newton([{'params': [head]}, {'params': [tail]}])
    loss = opt.step(lambda: quadratic(torch.cat([head, tail])))
    assert loss == pytest.approx(quadratic(torch.tensor([0.3, -0.7, 2.0], dtype=DTYPE)).item())
    assert not loss.requires_grad
    solution = torch.linalg.solve(A, B)
    assert torch.allclose(torch.cat([head, tail]).detach(), solution, rtol=0, atol=1e-14)
    # .grad holds the gradient where the step started
    expected = A @ torch.tensor([0.3, -0.7, 2.0], dtype=DTYPE) - B
    assert torch.allclose(torch.cat([head.grad, tail.grad]), expected, atol=1e-14)
    opt.step(lambda: quadratic(torch.cat([head, tail])))   # at the minimum: stays
    assert torch.allclose(torch.cat([head, tail]).detach(), solution, atol=1e-14)
    assert (opt.fallbacks, opt.non_descent) == (0, 0)
    assert opt.state[head]['step'].item() == 2


def test_lr_scales_the_newton_step_per_group():
    head, tail = point(0.0, 0.0), point(0.0)
    opt = Newton([{'params': [head], 'lr': 0.5}, {'params': [tail], 'lr': 0.25}])
    opt.step(lambda: quadratic(torch.cat([head, tail])))
    d = torch.linalg.solve(A, -B)          # Newton direction at 0 (the gradient is −b)
    assert torch.allclose(head.detach(), -0.5 * d[:2], atol=1e-15)
    assert torch.allclose(tail.detach(), -0.25 * d[2:], atol=1e-15)


def test_rosenbrock_from_minus_1_5_2_converges_in_5_steps():
    p = point(-1.5, 2.0)
    opt = Newton([p])   # lr=1.0, damping=0.0
    distances = []
    for _ in range(8):
        opt.step(lambda: rosenbrock(p))
        distances.append(math.dist(p.tolist(), (1.0, 1.0)))
    first = next(k + 1 for k, d in enumerate(distances) if d < 1e-3)
    assert first == 5     # measured: 2.7, 3.8, 1.2, 0.63, 7.4e-4, 1.1e-7, 0
    assert distances[5] < 1e-6 and distances[-1] < 1e-12   # then quadratic convergence
    assert (opt.fallbacks, opt.non_descent) == (0, 0)


def test_seed_newton_with_half_steps_takes_two_uphill_steps_then_converges():
    """The seed's run: x ← x − 0.5 H⁻¹∇f from (−1, 1.5), 100 steps, reaches (1, 1)."""
    p = point(-1.0, 1.5)
    opt = Newton([p], lr=0.5)
    for _ in range(100):
        opt.step(lambda: rosenbrock(p))
    assert math.dist(p.tolist(), (1.0, 1.0)) < 1e-12
    assert (opt.non_descent, opt.fallbacks) == (2, 0)    # H is indefinite at steps 4 and 5


def test_hessian_matches_the_analytic_rosenbrock_hessian():
    x, y = 0.3, -0.4
    p = point(x, y)
    opt = Newton([p])
    opt.step(lambda: rosenbrock(p))
    h = torch.tensor([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]],
                     dtype=DTYPE)
    g = torch.tensor([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], dtype=DTYPE)
    assert torch.allclose(p.grad, g, atol=1e-12)
    assert torch.allclose(p.detach(), torch.tensor([x, y], dtype=DTYPE) - torch.linalg.solve(h, g),
                          atol=1e-12)


def test_damping_solves_the_damped_system_and_tends_to_gradient_descent():
    x = torch.nn.Parameter(torch.zeros(3, dtype=DTYPE))
    Newton([x], damping=2.0).step(lambda: quadratic(x))
    expected = torch.linalg.solve(A + 2.0 * torch.eye(3, dtype=DTYPE), B)
    assert torch.allclose(x.detach(), expected, atol=1e-14)
    # large damping: a gradient step of lr / damping
    p = point(-1.5, 2.0)
    with torch.enable_grad():
        g = torch.autograd.grad(rosenbrock(p), p)[0]
    Newton([p], lr=0.5, damping=1e9).step(lambda: rosenbrock(p))
    step = torch.tensor([-1.5, 2.0], dtype=DTYPE) - p.detach()
    assert torch.allclose(step, 0.5 * g / 1e9, rtol=1e-5, atol=0)
    # damping makes the indefinite start of the seed's run a descent step
    q = point(-1.0, 1.5)
    opt = Newton([q], damping=100.0, require_descent=True, fallback='raise')
    before = rosenbrock(q).item()
    opt.step(lambda: rosenbrock(q))
    assert rosenbrock(q).item() < before and opt.non_descent == 0


def test_singular_system_falls_back_to_the_gradient_or_raises():
    def loss_of(p):
        return (p[0] + p[1] - 1.0) ** 2       # Hessian [[2, 2], [2, 2]]: singular
    p = point(0.5, 1.5)
    opt = Newton([p], lr=0.1)
    opt.step(lambda: loss_of(p))
    g = torch.tensor([2.0, 2.0], dtype=DTYPE)      # 2 (x + y − 1) at (0.5, 1.5)
    assert torch.allclose(p.detach(), torch.tensor([0.5, 1.5], dtype=DTYPE) - 0.1 * g)
    assert opt.fallbacks == 1 and opt.state[p]['fallbacks'].dtype == DTYPE
    q = point(0.5, 1.5)
    with pytest.raises(NewtonStepError, match=r'step 1: the system H \+ damping\*I is singular; '
                                              r'set damping > 0'):
        Newton([q], fallback='raise').step(lambda: loss_of(q))
    assert q.tolist() == [0.5, 1.5]            # nothing moved
    Newton([q], damping=1.0, fallback='raise').step(lambda: loss_of(q))   # damped: fine


def test_uphill_newton_direction_is_taken_unless_descent_is_required():
    def concave(p):
        return -(p[0] ** 2) + p[1] ** 2        # saddle at 0: Newton jumps onto it
    p = point(1.0, 2.0)                        # g = (−2, 4), d = (1, 2): g.d = 6 > 0
    opt = Newton([p])
    opt.step(lambda: concave(p))
    assert p.tolist() == [0.0, 0.0] and (opt.non_descent, opt.fallbacks) == (0, 0)
    p = point(1.0, 0.0)                        # g = (−2, 0), d = (1, 0): g.d = −2 (uphill)
    opt = Newton([p], lr=0.5)
    opt.step(lambda: concave(p))
    assert p.tolist() == [0.5, 0.0] and opt.non_descent == 1
    q = point(1.0, 0.0)
    opt = Newton([q], lr=0.5, require_descent=True)
    opt.step(lambda: concave(q))
    assert q.tolist() == [2.0, 0.0] and (opt.fallbacks, opt.non_descent) == (1, 0)
    r = point(1.0, 0.0)
    with pytest.raises(NewtonStepError, match='not a descent direction'):
        Newton([r], require_descent=True, fallback='raise').step(lambda: concave(r))


def test_stationary_point_is_no_step_and_no_fallback():
    p = point(1.0, 1.0)
    opt = Newton([p], fallback='raise', require_descent=True)
    opt.step(lambda: rosenbrock(p))
    assert p.tolist() == [1.0, 1.0] and (opt.fallbacks, opt.non_descent) == (0, 0)


def test_missing_or_bad_closure_is_a_clear_error():
    p = point(0.0, 0.0)
    opt = Newton([p])
    with pytest.raises(TypeError, match='Newton.step needs a closure'):
        opt.step()
    with pytest.raises(TypeError, match='scalar tensor'):
        opt.step(lambda: rosenbrock(p.detach()))
    with pytest.raises(TypeError, match='scalar tensor'):
        opt.step(lambda: p * 2)

    def backward_first():
        loss = rosenbrock(p)
        loss.backward()
        return loss
    with pytest.raises(RuntimeError, match='without calling loss.backward'):
        opt.step(backward_first)


@pytest.mark.parametrize('kwargs, fragment', [
    ({'lr': -1.0}, 'lr must be a finite number >= 0'),
    ({'lr': math.inf}, 'lr must be'),
    ({'damping': -0.1}, 'damping must be'),
    ({'fallback': 'pinv'}, "fallback must be 'gradient' or 'raise'"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Newton([point(0.0, 0.0)], **kwargs)


def test_save_new_optimizer_load_continues_identically():
    def run(p, opt, steps):
        for _ in range(steps):
            opt.step(lambda: rosenbrock(p))

    straight = point(-1.0, 1.5)
    opt = Newton([straight], lr=0.5, damping=0.1)
    run(straight, opt, 6)
    buffer = io.BytesIO()
    torch.save({'p': straight.detach().clone(), 'opt': opt.state_dict()}, buffer)
    run(straight, opt, 6)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = torch.nn.Parameter(saved['p'])
    opt2 = Newton([resumed], lr=1.0)       # settings come back from the state dict
    opt2.load_state_dict(saved['opt'])
    assert opt2.param_groups[0]['lr'] == 0.5 and opt2.param_groups[0]['damping'] == 0.1
    assert opt2.state[resumed]['step'].item() == 6
    run(resumed, opt2, 6)
    assert torch.equal(resumed.detach(), straight.detach())
    for key in ('step', 'fallbacks', 'non_descent'):
        assert torch.equal(opt2.state[resumed][key], opt.state[straight][key])
        assert opt2.state[resumed][key].dtype == opt.state[straight][key].dtype
