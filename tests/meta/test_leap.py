"""Leap's on-the-fly meta-gradient against brute-force references on a tiny problem."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from meta import Leap, Reptile
from tasks.base import InnerLoopConfig
from tasks.inner_loop import make_optimizer

STEPS = 6


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batches(seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
        for _ in range(n)
    ]


def run_task(model, hook, data, optimizer="sgd"):
    """K steps on data[0..K-1], then the loss at theta_K on data[K]; returns the trajectory."""
    opt = make_optimizer(model.parameters(), InnerLoopConfig(optimizer=optimizer, lr=0.3))
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
    params = {n: t.clone().requires_grad_(True) for n, t in theta.items()}
    loss = F.cross_entropy(functional_call(model, params, (batch[0],)), batch[1])
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.detach(), dict(zip(params, grads, strict=True))


def reference_formula(model, thetas, data, metric, loss_in_manifold, stabilizer, final_segment):
    """The meta-gradient straight from DESIGN section 1, one segment at a time, in float64."""
    names = list(thetas[0])
    total = {n: torch.zeros_like(thetas[0][n]) for n in names}
    segments = STEPS if final_segment else STEPS - 1
    for i in range(segments):
        f_i, g_i = loss_and_grad(model, thetas[i], data[i])
        f_next, _ = loss_and_grad(model, thetas[i + 1], data[i + 1])
        d_theta = {n: thetas[i + 1][n] - thetas[i][n] for n in names}
        d_f = (f_next - f_i) if loss_in_manifold else torch.zeros((), dtype=torch.float64)
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


def leap_gradient(options, optimizer="sgd", n_tasks=1):
    model = tiny_model()
    leap = Leap(model, **options)
    trajectories = []
    for t in range(n_tasks):
        data = batches(100 + t, STEPS + 1)
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
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_meta_gradient_matches_formula(options, optimizer):
    model, leap, [(thetas, data)] = leap_gradient(options, optimizer)
    expected = reference_formula(model, thetas, data, **options)
    for name, p in zip(leap.names, leap.parameters(), strict=True):
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "options", [o for o in OPTIONS if not o["stabilizer"]], ids=lambda o: str(o)
)
def test_formula_is_the_gradient_of_the_path_length(options):
    model, leap, [(thetas, data)] = leap_gradient(options)
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


def test_reptile_gradient_is_mean_of_init_minus_final():
    model = tiny_model()
    reptile = Reptile(model)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    finals = []
    for t in range(3):
        with reptile.task(model) as hook:
            thetas, _ = run_task(model, hook, batches(7 + t, STEPS + 1))
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


def test_unused_parameter_contributes_only_its_displacement():
    class WithUnusedHead(nn.Sequential):
        def forward(self, x):
            return self[0](x)

    model = WithUnusedHead(tiny_model(), nn.Linear(2, 2).double())
    leap = Leap(model)
    with leap.task(model) as hook:
        run_task(model, hook, batches(3, STEPS + 1))
    leap.end_meta_batch()
    unused = leap.names.index("1.weight")
    # SGD never moves a parameter without a gradient: no displacement, zero meta-gradient.
    assert torch.count_nonzero(leap.parameters()[unused].grad) == 0
    assert torch.isfinite(leap.parameters()[0].grad).all()


def test_buffers_reset_to_initial_values_for_every_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    leap = Leap(model)
    initial_mean = model[1].running_mean.clone()
    with leap.task(model):
        model(torch.randn(8, 4, dtype=torch.float64))
    assert not torch.equal(model[1].running_mean, initial_mean)
    with leap.task(model):
        torch.testing.assert_close(model[1].running_mean, initial_mean)
