"""Recurrent state as a pytree: a tensor, or nested tuples, lists and dicts of tensors.

A stateful network (a ConvRNN stepped frame by frame, an agent's encoder) hands its
state around in this form; these helpers map over every tensor of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

State = Any
"""A network's recurrent state: a tensor or a (nested) tuple / list / dict of tensors."""


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply `fn` to every tensor of `state`; anything else is kept as it is."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(map_state(fn, v) for v in state)
    return state


def detach_state(state: State) -> State:
    """`state` with every tensor detached from the autograd graph (truncated BPTT)."""
    return map_state(Tensor.detach, state)
