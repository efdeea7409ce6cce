"""Rolls a token policy out in the real gymnasium environments (Gato's control evaluation).

Each episode runs in its own environment, reset with seed `seed + k`. At every
timestep the policy reads one multimodal example: the demonstration prompt, the
most recent timesteps of its own episode that fit the row, then the current
observation tokens and the separator; it writes the action tokens greedily, one
at a time, among the ids an action may take (`ControlTask.token_range`). The
action tokens are turned into the environment's action (discrete id, or the
bin centres clipped to the action bound), and the return is the sum of the
environment's rewards until it terminates or truncates.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from jaxssl.data.gato_control import ControlTask, Vocabulary, timestep_segments
from jaxssl.data.multimodal import example_arrays

# (tokens int32 [E, T], lengths int32 [E]) -> logits [E, V] of the token after tokens[:, :length].
NextLogits = Callable[[np.ndarray, np.ndarray], np.ndarray]


def context_tokens(task: ControlTask, prompt: np.ndarray, history: list[np.ndarray],
                   current: np.ndarray, row_length: int) -> np.ndarray:
    """int32 [<= row_length]: prompt + the newest history timesteps that fit + `current`
    (observation tokens, separator, any action tokens chosen so far)."""
    room = (row_length - len(current)) // task.step_length - len(prompt)
    if room < 0:
        raise ValueError(f"prompt of {len(prompt)} timesteps leaves no room in a row of "
                         f"{row_length}")
    recent = history[len(history) - min(room, len(history)):]
    steps = np.concatenate([prompt, *([np.stack(recent)] if recent else [])]).reshape(
        -1, task.step_length)
    return np.concatenate([example_arrays(timestep_segments(task, steps))["tokens"], current]
                          ).astype(np.int32)


def rollout_returns(task: ControlTask, vocab: Vocabulary, next_logits: NextLogits,
                    prompt: np.ndarray, row_length: int, num_episodes: int, seed: int
                    ) -> np.ndarray:
    """float64 [num_episodes]: the return of each episode under greedy decoding.

    prompt: int32 [P, step_length], a demonstration's step tokens.
    """
    envs = [task.make_env() for _ in range(num_episodes)]
    observations = [env.reset(seed=seed + k)[0] for k, env in enumerate(envs)]
    histories: list[list[np.ndarray]] = [[] for _ in envs]
    returns = np.zeros(num_episodes)
    active = np.ones(num_episodes, bool)
    low, high = task.token_range(vocab)
    while active.any():
        current = [np.concatenate([task.observation_tokens(o, vocab), [vocab.separator]])
                   for o in observations]
        for _ in range(task.action_dim):
            tokens = np.zeros((num_episodes, row_length), np.int32)
            lengths = np.ones(num_episodes, np.int32)
            for k in np.flatnonzero(active):
                context = context_tokens(task, prompt, histories[k], current[k], row_length)
                tokens[k, :len(context)], lengths[k] = context, len(context)
            logits = np.asarray(next_logits(tokens, lengths))
            chosen = low + np.argmax(logits[:, low:high], axis=1)
            current = [np.append(c, t) for c, t in zip(current, chosen)]
        for k in np.flatnonzero(active):
            action = current[k][task.observation_dim + 1:]
            observation, reward, terminated, truncated, _ = envs[k].step(
                task.env_action(action, vocab))
            returns[k] += float(reward)
            histories[k].append(current[k].astype(np.int32))
            observations[k] = observation
            active[k] = not (terminated or truncated)
    return returns
