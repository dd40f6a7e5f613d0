"""The inner-loop optimizers: one table (name -> factory) for every inner loop.

Vision tasks (`tasks.inner_loop.fit_supervised`), A2C on Atari (`envs.a2c.train`) and
config validation all read `INNER_OPTIMIZERS`; a factory builds a torch optimizer over a
task's parameters from the `InnerLoopConfig` (learning rate, momentum, RMSprop's alpha
and eps, and the L2 weight decay every entry applies). An unknown name is a one-line
error that lists the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from leap_convrnn.registry import Registry
from tasks.base import InnerLoopConfig

InnerOptimizer = Callable[[list[nn.Parameter], InnerLoopConfig], torch.optim.Optimizer]

INNER_OPTIMIZERS: Registry[InnerOptimizer] = Registry("inner optimizer")


@INNER_OPTIMIZERS.register("sgd")
def sgd(params: list[nn.Parameter], config: InnerLoopConfig) -> torch.optim.Optimizer:
    """Plain SGD at `config.lr` (the Leap paper's Omniglot inner loop)."""
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)


@INNER_OPTIMIZERS.register("momentum")
def momentum(params: list[nn.Parameter], config: InnerLoopConfig) -> torch.optim.Optimizer:
    """SGD with heavy-ball momentum `config.momentum`."""
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@INNER_OPTIMIZERS.register("adam")
def adam(params: list[nn.Parameter], config: InnerLoopConfig) -> torch.optim.Optimizer:
    """Adam with torch's default betas and eps."""
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@INNER_OPTIMIZERS.register("rmsprop")
def rmsprop(params: list[nn.Parameter], config: InnerLoopConfig) -> torch.optim.Optimizer:
    """RMSprop with decay `config.rmsprop_alpha` and epsilon `config.rmsprop_eps` (the Leap
    paper's Atari inner loop: alpha 0.99, eps 1e-4)."""
    return torch.optim.RMSprop(
        params,
        lr=config.lr,
        alpha=config.rmsprop_alpha,
        eps=config.rmsprop_eps,
        weight_decay=config.weight_decay,
    )


def make_optimizer(
    params: Iterable[nn.Parameter], config: InnerLoopConfig
) -> torch.optim.Optimizer:
    """The inner-loop optimizer named by `config.optimizer`, over `params`."""
    return INNER_OPTIMIZERS.get(config.optimizer)(list(params), config)
