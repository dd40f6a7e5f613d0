"""Test doubles: a scripted vector env and tiny encoders (feedforward and stateful)."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import torch
from torch import Tensor, nn


class ScriptedVectorEnv:
    """A vector env with Gymnasium NEXT_STEP autoreset and scripted episode ends.

    `ends[i]` maps an env's step index (1-based, counting every `step` call) to "term" or
    "trunc". Rewards are the step index; observations hold the step index in every pixel
    (mod 256), so a test can see what the agent was fed.
    """

    def __init__(self, num_envs: int, ends: list[dict[int, str]], num_actions: int = 3) -> None:
        self.num_envs = num_envs
        self.ends = ends
        self.single_action_space = gymnasium.spaces.Discrete(num_actions)
        self.calls = 0
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self.actions: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.full((self.num_envs, 4, 84, 84), self.calls % 256, dtype=np.uint8)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        self.calls = 0
        self._autoreset[:] = False
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        self.actions.append(np.asarray(actions).copy())
        self.calls += 1
        reward = np.where(self._autoreset, 0.0, float(self.calls))
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i in range(self.num_envs):
            kind = self.ends[i].get(self.calls)
            if kind is not None and not self._autoreset[i]:
                terminated[i] = kind == "term"
                truncated[i] = kind == "trunc"
        self._autoreset = terminated | truncated
        return self._obs(), reward, terminated, truncated, {}

    def close(self) -> None:
        pass


class TinyEncoder(nn.Module):
    """A cheap feedforward encoder: global average of each channel -> Linear -> ReLU."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(input_shape[0], num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc(x.mean(dim=(2, 3))))


class CountingStatefulEncoder(nn.Module):
    """A stateful encoder whose state counts the steps since its last reset.

    Features depend on the parameters and on the state (so the state carries a graph);
    every `reset_state` mask and every state value seen by `step` is recorded.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(input_shape[0], num_outputs)
        self.gain = nn.Parameter(torch.tensor(0.1))
        self.masks: list[Tensor] = []
        self.seen_counts: list[Tensor] = []

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        return torch.zeros(batch_size), torch.zeros(batch_size, self.fc.out_features)

    def reset_state(self, state: tuple[Tensor, Tensor], done: Tensor) -> tuple[Tensor, Tensor]:
        self.masks.append(done.clone())
        keep = (~done).to(state[0].dtype)
        return state[0] * keep, state[1] * keep.unsqueeze(1)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        count, memory = state
        self.seen_counts.append(count.detach().clone())
        features = torch.relu(self.fc(x.mean(dim=(2, 3))) + self.gain * memory)
        return features, (count + 1, features)

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.step(x, self.initial_state(x.shape[0]))
        return features


class ExplodingEncoder(TinyEncoder):
    """A TinyEncoder whose features become infinite from its `explode_at`-th call on."""

    def __init__(self, input_shape: tuple[int, int, int], explode_at: int) -> None:
        super().__init__(input_shape)
        self.explode_at = explode_at
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        features = super().forward(x)
        return features * math.inf if self.calls >= self.explode_at else features
