"""Few-shot classification tasks: a training set to adapt on and a held-out set to score."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from tasks.base import InnerLoopConfig, InnerLoopResult, Task, TrajectoryHook
from tasks.inner_loop import Batch, evaluate_classifier, fit_supervised


@dataclass(frozen=True)
class RandomAffine:
    """Batched random affine augmentation of training images (Leap paper, Omniglot).

    Every image of a minibatch gets its own rotation, uniform in
    [-`degrees`, `degrees`], translation, uniform in [-`translate`, `translate`]
    of the image size along each axis, and isotropic scale, uniform in
    [`scale_min`, `scale_max`]. Pixels that come from outside the image are 0
    (the background of stroke images). The Leap reference code uses
    torchvision's `RandomAffine((0, 360), (0.2, 0.2), (0.8, 1.2))`, i.e.
    `degrees=180` here (any angle), translate 0.2 and scale 0.8 to 1.2.

    Draws come from the `torch.Generator` passed in, so augmented minibatches are
    reproducible from a task's seed; one `grid_sample` call does the whole batch.

    Differences from the reference code, by choice: translations are continuous
    (torchvision rounds them to whole pixels), sampling is bilinear (torchvision's
    default is nearest), and held-out images are never transformed (the reference
    code's data set applies the transform to its held-out drawings too).
    """

    degrees: float = 180.0
    translate: float = 0.2
    scale_min: float = 0.8
    scale_max: float = 1.2

    def __post_init__(self) -> None:
        if not 0 <= self.degrees <= 180:
            raise UserError(f"augmentation degrees must be in [0, 180], got {self.degrees}")
        if not 0 <= self.translate < 1:
            raise UserError(f"augmentation translate must be in [0, 1), got {self.translate}")
        if not 0 < self.scale_min <= self.scale_max:
            raise UserError(
                "augmentation scale needs 0 < scale_min <= scale_max, got "
                f"{self.scale_min} and {self.scale_max}"
            )

    def draw(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """The transforms of `batch` images: rotation in degrees (batch,), scale (batch,)
        and translation in image sizes (batch, 2), drawn in this order from `generator`."""

        def uniform(low: float, high: float, *shape: int) -> Tensor:
            return low + (high - low) * torch.rand(*shape, generator=generator)

        degrees = uniform(-self.degrees, self.degrees, batch)
        scale = uniform(self.scale_min, self.scale_max, batch)
        shift = uniform(-self.translate, self.translate, batch, 2)
        return degrees, scale, shift

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augment `images` (B, C, H, W) float; returns a new tensor of the same shape."""
        degrees, scale, shift = self.draw(images.shape[0], generator)
        angle = degrees * (math.pi / 180)
        shift = shift * 2  # affine_grid works in [-1, 1] coordinates: t image sizes is 2t.
        # The grid maps output to input coordinates: the inverse of the forward transform
        # x_out = scale * R(angle) x_in + shift.
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
        offset = -(inverse @ shift.unsqueeze(-1))
        theta = torch.cat([inverse, offset], -1).to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


Augment = Callable[[Tensor, torch.Generator], Tensor]


CALIBRATION_IMAGES = 1000
"""At most this many training images re-estimate BatchNorm statistics for evaluation."""


@dataclass
class ClassificationTask(Task):
    """A supervised task on in-memory tensors.

    The inner loop draws minibatches of `config.batch_size` training examples
    uniformly with replacement from a generator seeded with `seed`, so the same
    task trains identically every time it is run from the same parameters.
    `augment`, when set, transforms each training minibatch with draws from the
    same generator; held-out examples are never augmented.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_outputs: int
    seed: int
    augment: Augment | None = None

    def to(self, device: torch.device | str) -> ClassificationTask:
        """This task with its four tensors on `device`; the minibatch indices and the
        augmentation's draws stay on the CPU generator, so the stream is unchanged."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def batches(self, batch_size: int) -> Callable[[], Batch]:
        """A fresh minibatch stream over the training set, seeded with the task's seed."""
        generator = torch.Generator().manual_seed(self.seed)
        n = self.x_train.shape[0]

        def next_batch() -> Batch:
            index = torch.randint(0, n, (min(batch_size, n),), generator=generator)
            x = self.x_train[index]
            if self.augment is not None:
                x = self.augment(x, generator)
            return x, self.y_train[index]

        return next_batch

    def inner_loop(
        self,
        model: nn.Module,
        config: InnerLoopConfig,
        hook: TrajectoryHook | None = None,
    ) -> InnerLoopResult:
        return fit_supervised(
            model, self.batches(config.batch_size), config, hook, examples=self.x_train.shape[0]
        )

    def calibration_images(self) -> Tensor:
        """The training images on which held-out BatchNorm statistics are re-estimated:
        all of them, or a sample of `CALIBRATION_IMAGES` seeded by the task."""
        x = self.x_train
        if x.shape[0] > CALIBRATION_IMAGES:
            generator = torch.Generator().manual_seed(self.seed)
            x = x[torch.randperm(x.shape[0], generator=generator)[:CALIBRATION_IMAGES]]
        return x

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out loss and accuracy in eval mode, with BatchNorm statistics re-estimated
        on the task's training images at the model's current weights (`precise_batchnorm`)."""
        return evaluate_classifier(
            model, self.x_test, self.y_test, calibration=self.calibration_images()
        )
