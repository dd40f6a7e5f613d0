"""The interface every meta-learner implements, so one runner drives them all, and the
initialization state that the learners with one share (`Initialization`)."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from tasks.base import InnerLoopConfig, InnerLoopResult, Task


class MetaLearner(ABC):
    """Owns an initialization (possibly none) and turns task inner loops into its update.

    Every learner is built the same way, `Learner(model, parameters=..., seed=..., **its
    options)`: `parameters` names the model parameters whose initialization is learned
    (None: every trainable one; the task family may ask for a part, as Atari asks for the
    encoder), and `seed` seeds the fresh draws of everything else.

    The runner calls, per meta-step: `adapt(model, task, inner)` for each task of the
    meta-batch, then `end_meta_batch()`, which leaves the averaged meta-gradient in
    `.grad` of `parameters()` for any torch optimizer to apply.
    """

    name: ClassVar[str]
    initialization: Initialization | None = None
    """The learned initialization (None for a learner that has none, as Scratch)."""

    @abstractmethod
    def parameters(self) -> list[nn.Parameter]:
        """The meta-learned tensors (empty for a learner with nothing to learn)."""

    @abstractmethod
    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        """Start `model` from this learner's initialization and run the task's inner loop."""

    @abstractmethod
    def end_meta_batch(self) -> dict[str, float]:
        """Write the meta-batch's averaged meta-gradient into `.grad`; return `meta/` metrics."""

    @property
    def names(self) -> list[str]:
        """Names of the model parameters whose initialization is learned."""
        return self.initialization.names if self.initialization is not None else []

    def initialize(self, model: nn.Module) -> None:
        """Load this learner's initialization into `model` (parameters and buffers), with a
        fresh draw of the parameters it does not learn."""
        if self.initialization is None:
            raise NotImplementedError(f"{type(self).__name__} has no initialization to load")
        self.initialization.load(model)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this learner: its initialization's state, or else
        the values of its meta-learned tensors."""
        if self.initialization is not None:
            return self.initialization.state_dict()
        return {"parameters": [p.detach().clone() for p in self.parameters()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.initialization is not None:
            self.initialization.load_state_dict(state)
            return
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


class Initialization:
    """A learner's theta_0: the values of a subset of a model's trainable parameters (by
    name), the model's buffers, and the fresh draw of every other trainable parameter.

    Shared by Leap / Reptile, MAML / FOMAML and Finetune. `load(model)` draws the
    parameters left out afresh (`FreshDraw`, seed `seed + n` for the n-th draw, so no two
    tasks share a head and a resumed run draws what an uninterrupted one would), then
    copies theta_0 and the buffers in. Buffers (BatchNorm statistics) are not on Leap's
    path: every task starts from the buffers the model had when the learner was built,
    unless the learner keeps a task's (`keep`, as Finetune does).

    Args:
        model: the network; its current values start the initialization.
        names: the parameters to learn (None: every trainable one), in this order.
        seed: seed of the first fresh draw.
        owner: the learner's name, for error messages.
        storage: what holds theta_0: "parameter" (new `nn.Parameter` copies, for a
            meta-optimizer: Leap), "tensor" (plain copies: Finetune) or "shared" (the
            model's own parameters: MAML, whose learn2learn wrapper owns them).
    """

    STORAGES = ("parameter", "tensor", "shared")

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str] | None,
        *,
        seed: int,
        owner: str,
        storage: str = "parameter",
    ) -> None:
        if storage not in self.STORAGES:
            raise ValueError(f"storage {storage!r}; accepted: {', '.join(self.STORAGES)}")
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if names is None:
            names = trainable
        unknown = sorted(set(names) - set(trainable))
        if unknown:
            raise UserError(
                f"{owner} parameters {unknown} are not trainable parameters of the model; "
                f"accepted: {', '.join(trainable)}"
            )
        if not names:
            raise UserError(f"{owner} has no trainable parameter to meta-learn")
        self.names = list(names)
        named = dict(model.named_parameters())
        chosen_params = [named[n] for n in self.names]
        self.values: list[Tensor] = (
            list(chosen_params)
            if storage == "shared"
            else [p.detach().clone() for p in chosen_params]
        )
        if storage == "parameter":
            self.values = [nn.Parameter(v) for v in self.values]
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        chosen = set(self.names)
        self.fresh = FreshDraw(model, [n for n in trainable if n not in chosen])
        self.seed = seed
        self.draws = 0

    def bind(self, model: nn.Module) -> list[Tensor]:
        """The parameters of `model` that theta_0 initializes, in `names` order."""
        named = dict(model.named_parameters())
        return [named[n] for n in self.names]

    def load(self, model: nn.Module) -> None:
        """Draw the other parameters of `model` afresh, then load theta_0 and the buffers."""
        if self.fresh.names:
            self.fresh(model, self.seed + self.draws)
            self.draws += 1
        with torch.no_grad():
            targets = self.bind(model)
            if any(t is not v for t, v in zip(targets, self.values, strict=True)):
                torch._foreach_copy_(targets, [v.detach() for v in self.values])
            buffers = dict(model.named_buffers())
            for name, value in self.buffers.items():
                buffers[name].copy_(value)

    def keep(self, model: nn.Module) -> None:
        """Make the values and buffers `model` holds now the initialization."""
        with torch.no_grad():
            torch._foreach_copy_([v.detach() for v in self.values], self.bind(model))
            for name, value in model.named_buffers():
                self.buffers[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {
            "parameters": [v.detach().clone() for v in self.values],
            "buffers": {n: b.clone() for n, b in self.buffers.items()},
            "draws": self.draws,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for value, saved in zip(self.values, state["parameters"], strict=True):
                value.copy_(saved)
        self.buffers = {n: b.clone() for n, b in state["buffers"].items()}
        self.draws = int(state["draws"])
