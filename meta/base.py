"""The interface every meta-learner implements, so one runner drives them all."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tasks.base import InnerLoopConfig, InnerLoopResult, Task


class MetaLearner(ABC):
    """Owns an initialization (possibly none) and turns task inner loops into its update.

    The runner calls, per meta-step: `adapt(model, task, inner)` for each task of the
    meta-batch, then `end_meta_batch()`, which leaves the averaged meta-gradient in
    `.grad` of `parameters()` for any torch optimizer to apply.
    """

    name: ClassVar[str]

    @abstractmethod
    def parameters(self) -> list[nn.Parameter]:
        """The meta-learned tensors (empty for a learner with nothing to learn)."""

    @abstractmethod
    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        """Start `model` from this learner's initialization and run the task's inner loop."""

    @abstractmethod
    def end_meta_batch(self) -> dict[str, float]:
        """Write the meta-batch's averaged meta-gradient into `.grad`; return `meta/` metrics."""

    @abstractmethod
    def initialize(self, model: nn.Module) -> None:
        """Load this learner's initialization into `model` (parameters and buffers)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this learner."""
        return {"parameters": [p.detach().clone() for p in self.parameters()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.parameters(), state["parameters"], strict=True):
                p.copy_(saved)


def _callable_without_arguments(fn: Any) -> bool:
    if not callable(fn):
        return False
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


class FreshDraw:
    """Re-draws a set of a model's parameters afresh, from a seed, with the model's own
    initializers: the parts of a network that are not meta-learned (a task's output head).

    Policy, per parameter: the outermost module on its path whose parameters are all in
    the set and that has a `reset_parameters()` callable without arguments is reset (so a
    head with its own initializer keeps it); failing that, its direct owner is reset if it
    has one (any meta-learned sibling it also resets is overwritten by the caller); failing
    that, the parameter is restored to the value it had when `FreshDraw` was built. The
    draw runs under a forked RNG seeded with `seed`: the global RNG state is left untouched.
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.names = list(names)
        chosen = set(self.names)
        modules: list[str] = []
        self._fixed: dict[str, Tensor] = {}
        named = dict(model.named_parameters())
        for name in self.names:
            module = self._module_for(model, name, chosen)
            if module is None:
                self._fixed[name] = named[name].detach().clone()
            elif module not in modules:
                modules.append(module)
        self.modules = modules

    @staticmethod
    def _module_for(model: nn.Module, name: str, chosen: set[str]) -> str | None:
        parts = name.split(".")[:-1]
        for depth in range(len(parts) + 1):
            path = ".".join(parts[:depth])
            module = model.get_submodule(path)
            prefix = f"{path}." if path else ""
            inside = [prefix + n for n, _ in module.named_parameters()]
            reset = getattr(module, "reset_parameters", None)
            if all(n in chosen for n in inside) and _callable_without_arguments(reset):
                return path
        owner = ".".join(parts)
        if _callable_without_arguments(
            getattr(model.get_submodule(owner), "reset_parameters", None)
        ):
            return owner
        return None

    def __call__(self, model: nn.Module, seed: int) -> None:
        """Draw the parameters of `model` named at construction, from `seed`."""
        if not self.names:
            return
        devices = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            for path in self.modules:
                model.get_submodule(path).reset_parameters()  # type: ignore[operator]
            named = dict(model.named_parameters())
            for name, value in self._fixed.items():
                named[name].copy_(value)


class FlatBuffer:
    """Flat storage for a list of tensors: one flat tensor per dtype, and a view of it
    shaped and strided like each tensor of `like` (dense layouts such as channels-last
    are kept, so copies into the views are plain memory copies).

    Elementwise updates and reductions run on `flats` (one kernel each, whatever the
    number of tensors); `views` let a single `torch._foreach_copy_` fill the storage
    from the parameters or their gradients, and hand per-parameter tensors back.
    """

    def __init__(self, like: list[Tensor]) -> None:
        devices = {t.device for t in like}
        if len(devices) > 1:
            raise ValueError(f"tensors on several devices: {sorted(map(str, devices))}")
        groups: dict[torch.dtype, list[int]] = {}
        for index, tensor in enumerate(like):
            groups.setdefault(tensor.dtype, []).append(index)
        self.flats: list[Tensor] = []
        views: list[Tensor | None] = [None] * len(like)
        for dtype, indices in groups.items():
            total = sum(like[i].numel() for i in indices)
            flat = torch.zeros(total, dtype=dtype, device=like[indices[0]].device)
            offset = 0
            for i in indices:
                tensor = like[i]
                stride = torch.empty_like(tensor, device="meta").stride()
                views[i] = flat.as_strided(tensor.shape, stride, offset)
                offset += tensor.numel()
            self.flats.append(flat)
        self.views: list[Tensor] = [v for v in views if v is not None]

    def zero_(self) -> None:
        for flat in self.flats:
            flat.zero_()

    def squared_norm(self, out: Tensor | None = None) -> Tensor:
        """Sum of squares of every element: one dot product per dtype, accumulated in at
        least single precision; written into the 0-dim `out` when given."""
        parts = []
        for flat in self.flats:
            if flat.element_size() < 4:
                parts.append(torch.linalg.vector_norm(flat, dtype=torch.float32).square())
            elif out is not None and len(self.flats) == 1 and out.dtype == flat.dtype:
                return torch.dot(flat, flat, out=out)
            else:
                parts.append(torch.dot(flat, flat))
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total if out is None else out.copy_(total)
