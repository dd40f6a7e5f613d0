"""Leap's on-the-fly meta-gradient against brute-force references on a tiny problem.

Every option combination (metric x loss coordinate x stabilizer x final segment) with
SGD, momentum, Adam and RMSprop as the inner optimizer is checked against the formula of
DESIGN section 1 evaluated segment by segment, and (without the stabilizer, which has no
objective) against autograd of the path length with identity Jacobians; in float64, on
CPU and, in the tests marked `gpu`, on CUDA.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from meta import Leap, Reptile
from tasks.base import InnerLoopConfig
from tasks.optimizers import make_optimizer
from tests.conftest import DEVICES

STEPS = 6


#: Inner learning rates: large enough for visible steps, small enough to stay stable.
LR = {"sgd": 0.3, "momentum": 0.3, "adam": 0.05, "rmsprop": 0.01}
INNER_OPTIMIZERS = list(LR)


def tiny_model(seed: int = 0, device: str = "cpu") -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().to(device)


def batches(seed: int, n: int, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 4, generator=g, dtype=torch.float64).to(device),
            torch.randint(0, 3, (8,), generator=g).to(device),
        )
        for _ in range(n)
    ]


def run_task(model, hook, data, optimizer="sgd"):
    """K steps on data[0..K-1], then the loss at theta_K on data[K]; returns the trajectory."""
    config = InnerLoopConfig(optimizer=optimizer, lr=LR[optimizer])
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    thetas, losses = [], []
    for x, y in data[:STEPS]:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        thetas.append({n: p.detach().clone() for n, p in model.named_parameters()})
        losses.append(loss.detach())
        if hook is not None:
            hook.on_step(loss.detach())
        opt.step()
    with torch.no_grad():
        final = F.cross_entropy(model(data[STEPS][0]), data[STEPS][1])
    thetas.append({n: p.detach().clone() for n, p in model.named_parameters()})
    losses.append(final)
    if hook is not None:
        hook.on_end(final)
    return thetas, losses


def loss_and_grad(model, theta, batch):
    """f and grad f at theta; a parameter the loss does not use gets a zero gradient."""
    params = {n: t.clone().requires_grad_(True) for n, t in theta.items()}
    loss = F.cross_entropy(functional_call(model, params, (batch[0],)), batch[1])
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    grads = [
        torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads, strict=True)
    ]
    return loss.detach(), dict(zip(params, grads, strict=True))


def reference_formula(
    model, thetas, data, metric, loss_in_manifold, stabilizer, final_segment, names=None
):
    """The meta-gradient straight from DESIGN section 1, one segment at a time, in float64.

    `names`: the meta-learned parameters (default: all); the path lives in their space.
    """
    names = list(thetas[0]) if names is None else names
    total = {n: torch.zeros_like(thetas[0][n]) for n in names}
    segments = STEPS if final_segment else STEPS - 1
    for i in range(segments):
        f_i, g_i = loss_and_grad(model, thetas[i], data[i])
        f_next, _ = loss_and_grad(model, thetas[i + 1], data[i + 1])
        d_theta = {n: thetas[i + 1][n] - thetas[i][n] for n in names}
        d_f = (f_next - f_i) if loss_in_manifold else torch.zeros_like(f_i)
        if stabilizer and loss_in_manifold:
            d_f = -d_f.abs()
        norm = torch.sqrt(sum((d.square().sum() for d in d_theta.values()), d_f.square()))
        w = 1.0 / norm if metric == "length" else 2.0
        for n in names:
            total[n] -= w * (d_f * g_i[n] + d_theta[n])
    return total


def reference_autograd(model, thetas, data, metric, loss_in_manifold, final_segment):
    """Differentiate the path length (or energy) itself with theta_{i+1} held fixed
    (the identity-Jacobian approximation), summing d/d theta_i over segments."""
    names = list(thetas[0])
    total = {n: torch.zeros_like(thetas[0][n]) for n in names}
    segments = STEPS if final_segment else STEPS - 1
    for i in range(segments):
        params = {n: t.clone().requires_grad_(True) for n, t in thetas[i].items()}
        f_i = F.cross_entropy(functional_call(model, params, (data[i][0],)), data[i][1])
        f_next, _ = loss_and_grad(model, thetas[i + 1], data[i + 1])
        sq = sum((thetas[i + 1][n] - params[n]).square().sum() for n in names)
        if loss_in_manifold:
            sq = sq + (f_next - f_i).square()
        d = sq.sqrt() if metric == "length" else sq
        grads = torch.autograd.grad(d, list(params.values()))
        for n, g in zip(names, grads, strict=True):
            total[n] += g
    return total


def leap_gradient(options, optimizer="sgd", n_tasks=1, device="cpu"):
    model = tiny_model(device=device)
    leap = Leap(model, **options)
    trajectories = []
    for t in range(n_tasks):
        data = batches(100 + t, STEPS + 1, device)
        with leap.task(model) as hook:
            thetas, _ = run_task(model, hook, data, optimizer)
        trajectories.append((thetas, data))
    leap.end_meta_batch()
    return model, leap, trajectories


OPTIONS = [
    dict(metric=m, loss_in_manifold=lm, stabilizer=st, final_segment=fs)
    for m, lm, st, fs in itertools.product(
        ("length", "energy"), (True, False), (True, False), (True, False)
    )
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
@pytest.mark.parametrize("optimizer", INNER_OPTIMIZERS)
@pytest.mark.parametrize("device", DEVICES)
def test_meta_gradient_matches_formula(options, optimizer, device):
    model, leap, [(thetas, data)] = leap_gradient(options, optimizer, device=device)
    expected = reference_formula(model, thetas, data, **options)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "options", [o for o in OPTIONS if not o["stabilizer"]], ids=lambda o: str(o)
)
@pytest.mark.parametrize("device", DEVICES)
def test_formula_is_the_gradient_of_the_path_length(options, device):
    model, leap, [(thetas, data)] = leap_gradient(options, device=device)
    kwargs = {k: v for k, v in options.items() if k != "stabilizer"}
    expected = reference_autograd(model, thetas, data, **kwargs)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)


def test_meta_batch_is_averaged():
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    model, leap, trajectories = leap_gradient(options, n_tasks=3)
    per_task = [reference_formula(model, th, d, **options) for th, d in trajectories]
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        mean = sum(t[name] for t in per_task) / 3
        torch.testing.assert_close(p.grad, mean, atol=1e-6, rtol=1e-6)


def test_energy_at_half_the_meta_learning_rate_takes_the_reference_code_step():
    """The reference code's energy gradient omits the factor 2 (its w_i is 1): meta SGD
    at lr / 2 here moves theta_0 exactly as the reference code's meta SGD at lr."""
    options = dict(metric="energy", loss_in_manifold=True, stabilizer=True, final_segment=False)
    model, leap, [(thetas, data)] = leap_gradient(options)
    doubled = reference_formula(model, thetas, data, **options)  # w_i = 2
    lr = 0.1
    before = {n: p.detach().clone() for n, p in zip(leap.names, leap.parameters(), strict=True)}
    torch.optim.SGD(leap.parameters(), lr=lr / 2).step()
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        reference_step = -lr * (doubled[name] / 2)  # the reference code's w_i = 1
        torch.testing.assert_close(p.detach() - before[name], reference_step)


def brute_force_path_parts(thetas, losses, metric, final_segment):
    """(objective without the loss coordinate's options, distance part, loss part) of one
    trajectory, from its points: Python sums over segments, one norm per parameter."""
    segments = len(thetas) - 1 if final_segment else len(thetas) - 2
    distance, loss_change = 0.0, 0.0
    for i in range(segments):
        dtheta_sq = sum(float((thetas[i + 1][n] - thetas[i][n]).square().sum()) for n in thetas[i])
        df = float(losses[i + 1] - losses[i])
        if metric == "length":
            distance += dtheta_sq**0.5
            loss_change += abs(df)
        else:
            distance += dtheta_sq
            loss_change += df * df
    return distance, loss_change


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_path_parts_match_a_brute_force_computation(options):
    """meta/path_distance(_sq) and meta/path_loss_change(_sq) are the meta-batch means of
    sum ||Delta theta_i|| (^2) and sum |Delta f_i| (^2) over the segments Leap counts."""
    model = tiny_model()
    leap = Leap(model, **options)
    parts = []
    for t in range(3):
        with leap.task(model) as hook:
            thetas, losses = run_task(model, hook, batches(200 + t, STEPS + 1), "momentum")
        parts.append(
            brute_force_path_parts(thetas, losses, options["metric"], options["final_segment"])
        )
    logged = leap.end_meta_batch()
    suffix = "" if options["metric"] == "length" else "_sq"
    distance = sum(p[0] for p in parts) / 3
    loss_change = sum(p[1] for p in parts) / 3
    assert logged[f"meta/path_distance{suffix}"] == pytest.approx(distance, rel=1e-9)
    assert logged[f"meta/path_loss_change{suffix}"] == pytest.approx(loss_change, rel=1e-9)
    assert distance > 0 and loss_change > 0
    objective = logged["meta/objective"]
    if not options["loss_in_manifold"]:
        assert objective == pytest.approx(distance, rel=1e-9)
    elif options["metric"] == "energy":
        assert objective == pytest.approx(distance + loss_change, rel=1e-9)
    else:  # each segment's length lies between its larger part and the sum of its parts
        assert max(distance, loss_change) <= objective <= distance + loss_change


@pytest.mark.parametrize("optimizer", INNER_OPTIMIZERS)
@pytest.mark.parametrize("device", DEVICES)
def test_reptile_gradient_is_mean_of_init_minus_final(optimizer, device):
    model = tiny_model(device=device)
    reptile = Reptile(model)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    finals = []
    for t in range(3):
        with reptile.task(model) as hook:
            thetas, _ = run_task(model, hook, batches(7 + t, STEPS + 1, device), optimizer)
        finals.append(thetas[-1])
    reptile.end_meta_batch()
    for name, p in zip(reptile.names, reptile.parameters(), strict=True):
        expected = sum(init[name] - f[name] for f in finals) / 3
        torch.testing.assert_close(p.grad, expected, atol=1e-6, rtol=1e-6)


def test_meta_gradient_is_detached_and_task_starts_from_init():
    model, leap, _ = leap_gradient(OPTIONS[0])
    for p in leap.parameters():
        assert p.grad is not None and p.grad.grad_fn is None and not p.grad.requires_grad
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with leap.task(model):
        torch.testing.assert_close(model[0].weight, leap.parameters()[0])


class WithUnusedHead(nn.Sequential):
    """A tiny model followed by a head that the forward pass never uses."""

    def forward(self, x):
        return self[0](x)


@pytest.mark.parametrize("optimizer", INNER_OPTIMIZERS)
def test_unused_parameter_contributes_only_its_displacement(optimizer):
    torch.manual_seed(1)
    model = WithUnusedHead(tiny_model(), nn.Linear(2, 2).double())
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    leap = Leap(model, **options)
    with leap.task(model) as hook:
        thetas, _ = run_task(model, hook, batches(3, STEPS + 1), optimizer)
    leap.end_meta_batch()
    grads = dict(zip(leap.names, (p.grad for p in leap.parameters()), strict=True))
    # No optimizer moves a parameter that never had a gradient: zero meta-gradient,
    # and the used parameters get exactly the formula's value.
    assert torch.count_nonzero(grads["1.weight"]) == 0
    expected = reference_formula(model, thetas, batches(3, STEPS + 1), **options)
    for name in leap.names:
        torch.testing.assert_close(grads[name], expected[name], atol=1e-6, rtol=1e-6)


def test_parameter_without_gradient_that_moves_contributes_its_displacement():
    """A parameter moved by something other than its gradient (here: a drift applied
    after each step) contributes -w_i Delta theta_i and enters every segment's norm."""
    torch.manual_seed(2)
    model = WithUnusedHead(tiny_model(), nn.Linear(2, 2).double())
    options = dict(metric="length", loss_in_manifold=True, stabilizer=False, final_segment=True)
    leap = Leap(model, **options)
    data = batches(4, STEPS + 1)
    with leap.task(model) as hook:
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        thetas = []
        for x, y in data[:STEPS]:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            thetas.append({n: p.detach().clone() for n, p in model.named_parameters()})
            hook.on_step(loss.detach())
            opt.step()
            with torch.no_grad():
                model[1].weight.add_(0.05)
        with torch.no_grad():
            final = F.cross_entropy(model(data[STEPS][0]), data[STEPS][1])
        thetas.append({n: p.detach().clone() for n, p in model.named_parameters()})
        hook.on_end(final)
    leap.end_meta_batch()
    expected = reference_formula(model, thetas, data, **options)
    grads = dict(zip(leap.names, (p.grad for p in leap.parameters()), strict=True))
    assert torch.all(grads["1.weight"] < 0)
    for name in leap.names:
        torch.testing.assert_close(grads[name], expected[name], atol=1e-6, rtol=1e-6)


def test_frozen_parameters_are_not_meta_learned():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    leap = Leap(model, **options)
    assert "0.weight" not in leap.names
    data = batches(5, STEPS + 1)
    with leap.task(model) as hook:
        thetas, _ = run_task(model, hook, data, "adam")
    leap.end_meta_batch()
    torch.testing.assert_close(model[0].weight, frozen)
    expected = reference_formula(model, thetas, data, **options, names=leap.names)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)


def test_buffers_reset_to_initial_values_for_every_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    leap = Leap(model)
    initial_mean = model[1].running_mean.clone()
    initial_var = model[1].running_var.clone()
    with leap.task(model):
        model(torch.randn(8, 4, dtype=torch.float64))
    assert not torch.equal(model[1].running_mean, initial_mean)
    with leap.task(model):
        torch.testing.assert_close(model[1].running_mean, initial_mean)
        torch.testing.assert_close(model[1].running_var, initial_var)
        assert int(model[1].num_batches_tracked) == 0
    model(torch.randn(8, 4, dtype=torch.float64))
    leap.initialize(model)
    torch.testing.assert_close(model[1].running_mean, initial_mean)


ENCODER = ["0.weight", "0.bias"]


@pytest.mark.parametrize("optimizer", INNER_OPTIMIZERS)
def test_subset_meta_gradient_lives_in_the_subset(optimizer):
    """With parameters=ENCODER, the path (and its norm) is the encoder's: the head's
    displacement is not part of the meta-learned trajectory."""
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    model = tiny_model()
    leap = Leap(model, **options, parameters=ENCODER)
    assert leap.names == ENCODER
    data = batches(6, STEPS + 1)
    with leap.task(model) as hook:
        thetas, _ = run_task(model, hook, data, optimizer)
    leap.end_meta_batch()
    expected = reference_formula(model, thetas, data, **options, names=ENCODER)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)


def fresh_linear(seed: int) -> nn.Linear:
    """The head a fresh draw from `seed` must produce: nn.Linear's own initializer."""
    layer = nn.Linear(5, 3).double()
    torch.manual_seed(seed)
    layer.reset_parameters()
    return layer


def test_parameters_outside_the_subset_are_drawn_afresh_for_each_task():
    model = tiny_model()
    leap = Leap(model, parameters=ENCODER, seed=40)
    references = [fresh_linear(40 + t) for t in range(3)]
    rng_state = torch.get_rng_state()
    heads = []
    for t, reference in enumerate(references):
        with leap.task(model) as hook:
            torch.testing.assert_close(model[2].weight, reference.weight, rtol=0, atol=0)
            torch.testing.assert_close(model[2].bias, reference.bias, rtol=0, atol=0)
            torch.testing.assert_close(model[0].weight, leap.parameters()[0])
            heads.append(model[2].weight.detach().clone())
            run_task(model, hook, batches(t, STEPS + 1))
    assert torch.equal(torch.get_rng_state(), rng_state), "the global RNG is left untouched"
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[1], heads[2])
    leap.end_meta_batch()


def test_fresh_draw_prefers_a_head_initializer_and_falls_back_to_the_first_value():
    class Head(nn.Module):
        """A head with an initializer of its own (orthogonal-like: a constant here)."""

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(5, 3)
            self.temperature = nn.Parameter(torch.ones(()))

        def reset_parameters(self):
            nn.init.constant_(self.linear.weight, 0.25)
            nn.init.zeros_(self.linear.bias)
            self.temperature.fill_(1.0)

        def forward(self, x):
            return self.linear(x) * self.temperature

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 5)
            self.head = Head()
            self.scale = nn.Parameter(torch.full((5,), 2.0))  # no initializer owns it

        def forward(self, x):
            return self.head(torch.tanh(self.body(x)) * self.scale)

    model = Net().double()
    leap = Leap(model, parameters=["body.weight", "body.bias"])
    assert leap.initialization.fresh.modules == ["head"]
    with torch.no_grad():
        model.head.linear.weight.fill_(9.0)
        model.head.temperature.fill_(9.0)
        model.scale.fill_(9.0)
    leap.initialize(model)
    assert torch.all(model.head.linear.weight == 0.25)
    assert model.head.temperature.item() == 1.0
    assert torch.all(model.scale == 2.0)


def test_channels_last_conv_and_mixed_dtypes_match_the_formula():
    """Flat buffers keep each parameter's layout (channels-last convolutions) and dtype."""

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1).double().to(memory_format=torch.channels_last)
            self.head = nn.Linear(3, 3)  # float32

        def forward(self, x):
            h = torch.tanh(self.conv(x.double())).mean((2, 3))
            return self.head(h.float()).double()

    torch.manual_seed(3)
    model = Mixed()
    assert not model.conv.weight.is_contiguous()
    g = torch.Generator().manual_seed(9)
    data = [
        (
            torch.randn(4, 2, 5, 5, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (4,), generator=g),
        )
        for _ in range(STEPS + 1)
    ]
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    leap = Leap(model, **options)
    with leap.task(model) as hook:
        thetas, _ = run_task(model, hook, data, "momentum")
    leap.end_meta_batch()
    expected = reference_formula(model, thetas, data, **options)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        assert p.grad.dtype == p.dtype and p.grad.stride() == p.stride()
        torch.testing.assert_close(p.grad, expected[name], atol=2e-5, rtol=2e-5)


def test_meta_gradient_can_be_clipped_and_applied_by_any_torch_optimizer():
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    model, leap, [(thetas, data)] = leap_gradient(options, n_tasks=1)
    expected = reference_formula(model, thetas, data, **options)
    raw = torch.cat([g.flatten() for g in expected.values()]).norm()
    assert raw > 0.5
    before = [p.detach().clone() for p in leap.parameters()]
    norm = torch.nn.utils.clip_grad_norm_(leap.parameters(), 0.5)
    torch.testing.assert_close(norm, raw)
    optimizer = torch.optim.SGD(leap.parameters(), lr=0.1)
    optimizer.step()
    for name, p, b in zip(leap.names, leap.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * expected[name] * (0.5 / raw))


def dispatched_ops(fn) -> int:
    """How many torch operations `fn` dispatches from Python."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def test_per_step_cost_does_not_loop_over_parameters():
    """The number of torch operations in a step is the same for 4 and 40 parameter tensors."""
    counts = []
    for depth in (2, 20):
        torch.manual_seed(0)
        model = nn.Sequential(*(nn.Linear(3, 3) for _ in range(depth)))
        leap = Leap(model)
        with leap.task(model) as hook:
            model(torch.randn(2, 3)).square().mean().backward()
            hook.on_step(torch.tensor(1.0))
            counts.append(dispatched_ops(lambda: hook.on_step(torch.tensor(0.5))))
    assert counts[0] == counts[1], counts


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_device_synchronisation_per_step_on_cuda():
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    model = tiny_model(device="cuda")
    leap = Leap(model, **options)
    data = batches(11, STEPS + 1, "cuda")

    class NoSync:
        def __init__(self, hook):
            self.hook = hook

        def on_step(self, loss):
            torch.cuda.set_sync_debug_mode("error")
            try:
                self.hook.on_step(loss)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        def on_end(self, loss):
            torch.cuda.set_sync_debug_mode("error")
            try:
                self.hook.on_end(loss)
            finally:
                torch.cuda.set_sync_debug_mode("default")

    with leap.task(model) as hook:
        thetas, _ = run_task(model, NoSync(hook), data, "adam")
    leap.end_meta_batch()
    expected = reference_formula(model, thetas, data, **options)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)


def test_a_task_whose_inner_loop_raises_contributes_nothing():
    options = dict(metric="length", loss_in_manifold=True, stabilizer=True, final_segment=True)
    model = tiny_model()
    leap = Leap(model, **options)
    data = batches(12, STEPS + 1)
    with leap.task(model) as hook:
        thetas, _ = run_task(model, hook, data)

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted), leap.task(model) as hook:
        hook.on_step(torch.tensor(1.0, dtype=torch.float64))
        with torch.no_grad():
            model[0].weight.add_(1.0)
        hook.on_step(torch.tensor(0.5, dtype=torch.float64))
        raise Interrupted
    leap.end_meta_batch()
    expected = reference_formula(model, thetas, data, **options)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)
