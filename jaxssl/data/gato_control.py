"""Gato's control data: gymnasium tasks, scripted experts, episodes and their tokens.

Token layout (Reed et al. 2022, section 2.1), past a text vocabulary of size V:

  [0, V)                  text tokens (the byte tokenizer's ids)
  [V, V + 1024)           continuous values, mu-law companded into 1,024 bins
                          (`jaxssl.data.multimodal.tokenize_continuous`), and
                          discrete actions a as V + a
  V + 1024                the separator between a timestep's observation and action

A timestep is [observation tokens (one per dimension), separator, action
tokens]; observations are never targets, actions always are.

Tasks (`CONTROL_TASKS`):
  cartpole  CartPole-v1, 4 observations, 1 discrete action of 2. Expert: the sign
            of a linear function of (x, x', angle, angle'): return 500 (the maximum).
  pendulum  Pendulum-v1, 3 observations (cos, sin, angular velocity), 1 continuous
            torque in [-2, 2]. Expert: energy pumping to swing up, PD control near
            the top (mean return about -150 over seeds 0-9; random torques: about -1,200).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxssl.data.multimodal import NUM_BINS, Segment, detokenize_continuous, tokenize_continuous
from jaxssl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Gato's token layout after a text vocabulary of `text_size` ids (module docstring)."""
    text_size: int

    @property
    def bins(self) -> int:
        """The first binned / discrete-action id."""
        return self.text_size

    @property
    def separator(self) -> int:
        return self.text_size + NUM_BINS

    @property
    def size(self) -> int:
        return self.separator + 1


def cartpole_expert(observation: np.ndarray) -> int:
    """Push right (1) when 0.1 x + 0.5 x' + 10 angle + 2 angle' > 0, else left (0)."""
    x, velocity, angle, angular_velocity = observation
    return int(0.1 * x + 0.5 * velocity + 10.0 * angle + 2.0 * angular_velocity > 0)


def pendulum_expert(observation: np.ndarray) -> np.ndarray:
    """Torque float32 [1] in [-2, 2]: PD on the angle within ~25 degrees of upright,
    else bang-bang energy pumping (energy relative to upright, unit mass and length,
    g = 10) until the energy is within 0.1 of the upright's."""
    cos, sin, angular_velocity = observation
    if cos > 0.9:
        torque = -10.0 * np.arctan2(sin, cos) - 2.0 * angular_velocity
    else:
        energy = 0.5 * angular_velocity ** 2 + 10.0 * (cos - 1.0)
        torque = (2.0 * np.sign(-energy * angular_velocity) if abs(energy) > 0.1
                  else -energy * angular_velocity)
    return np.clip(np.asarray([torque], np.float32), -2.0, 2.0)


@dataclasses.dataclass(frozen=True)
class ControlTask:
    """One environment: its id, action kind and scripted expert.

    num_actions: discrete action count, or 0 for a continuous action vector of
    `action_dim` values in [-action_bound, action_bound].
    """
    name: str
    env_id: str
    observation_dim: int
    expert: Callable[[np.ndarray], object]
    num_actions: int = 0
    action_dim: int = 1
    action_bound: float = 0.0

    @property
    def discrete(self) -> bool:
        return self.num_actions > 0

    @property
    def step_length(self) -> int:
        """Tokens per timestep: observations, separator, actions."""
        return self.observation_dim + 1 + self.action_dim

    def observation_tokens(self, observations: np.ndarray, vocab: Vocabulary) -> np.ndarray:
        """float [..., observation_dim] -> int32 bins [..., observation_dim]."""
        return tokenize_continuous(np.asarray(observations, np.float32), vocab.bins)

    def action_tokens(self, actions: np.ndarray, vocab: Vocabulary) -> np.ndarray:
        """Actions [..., action_dim] (ints if discrete) -> int32 tokens [..., action_dim]."""
        if self.discrete:
            return (np.asarray(actions, np.int32) + vocab.bins).astype(np.int32)
        return tokenize_continuous(np.asarray(actions, np.float32), vocab.bins)

    def token_range(self, vocab: Vocabulary) -> tuple[int, int]:
        """[low, high): the ids an action token may take (greedy decoding is limited to them)."""
        return vocab.bins, vocab.bins + (self.num_actions if self.discrete else NUM_BINS)

    def env_action(self, tokens: np.ndarray, vocab: Vocabulary):
        """Action tokens int [action_dim] -> what `env.step` takes (an int, or float32 [d])."""
        if self.discrete:
            return int(tokens[0]) - vocab.bins
        values = detokenize_continuous(np.asarray(tokens), vocab.bins)
        return np.clip(values, -self.action_bound, self.action_bound).astype(np.float32)

    def make_env(self):
        import gymnasium  # only control code needs it
        return gymnasium.make(self.env_id)


CONTROL_TASKS = {
    "cartpole": ControlTask("cartpole", "CartPole-v1", 4, cartpole_expert, num_actions=2),
    "pendulum": ControlTask("pendulum", "Pendulum-v1", 3, pendulum_expert, action_bound=2.0),
}


def control_task(name: str) -> ControlTask:
    if name not in CONTROL_TASKS:
        raise ConfigError(f"unknown control task {name!r}; valid: {sorted(CONTROL_TASKS)}")
    return CONTROL_TASKS[name]


@dataclasses.dataclass(frozen=True)
class Episode:
    """observations float32 [L, observation_dim] (each before its action), actions
    [L, action_dim] (int32 or float32), episode return (sum of rewards)."""
    observations: np.ndarray
    actions: np.ndarray
    episode_return: float

    def __len__(self) -> int:
        return len(self.observations)


def collect_episode(task: ControlTask, policy: Callable[[np.ndarray], object], seed: int,
                    env=None) -> Episode:
    """One episode of `policy` (observation -> env action) from `env.reset(seed=seed)`."""
    env = env or task.make_env()
    observation, _ = env.reset(seed=seed)
    observations, actions, total, done = [], [], 0.0, False
    while not done:
        action = policy(observation)
        observations.append(np.asarray(observation, np.float32))
        actions.append(np.atleast_1d(action))
        observation, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    dtype = np.int32 if task.discrete else np.float32
    return Episode(np.stack(observations), np.stack(actions).astype(dtype), total)


def expert_episodes(task: ControlTask, count: int, seed: int) -> list[Episode]:
    """`count` expert episodes from reset seeds seed, seed + 1, ..."""
    env = task.make_env()
    return [collect_episode(task, task.expert, seed + k, env) for k in range(count)]


def step_tokens(task: ControlTask, episode: Episode, vocab: Vocabulary) -> np.ndarray:
    """int32 [L, step_length]: each timestep's observation tokens, separator, action tokens."""
    separator = np.full((len(episode), 1), vocab.separator, np.int32)
    return np.concatenate([task.observation_tokens(episode.observations, vocab), separator,
                           task.action_tokens(episode.actions, vocab)], axis=1)


def timestep_segments(task: ControlTask, steps: np.ndarray) -> list[Segment]:
    """Rows of `step_tokens` -> segments: observation + separator (no loss), action (loss).

    A last row may stop after the separator (a rollout's current timestep)."""
    split = task.observation_dim + 1
    segments = []
    for row in np.asarray(steps):
        segments.append(Segment("action", tuple(int(t) for t in row[:split]), target=False))
        if len(row) > split:
            segments.append(Segment("action", tuple(int(t) for t in row[split:]), target=True))
    return segments


def prompt_steps(steps: np.ndarray, count: int) -> np.ndarray:
    """The demonstration prompt: the last `count` timesteps of an episode's step tokens
    (Gato takes half of its prompts from episode ends)."""
    return steps[len(steps) - min(count, len(steps)):]
