"""Generate text from a trained decoder-only language model ('lm' method).

  python -m jaxssl.sample --workdir=DIR [--prompt=TEXT] [--max_new_tokens=200]
                          [--temperature=0.8] [--top_k=0] [--seed=0] [--step=N]

Reads DIR/config.json, rebuilds the method and its train state's shapes on one
device from the data source's spec (no data is read), restores the parameters of
the newest intact (or --step) checkpoint with Orbax, takes a character vocabulary
from DIR/tokenizer.json (the one the run trained with), and samples token by
token: --temperature=0 is greedy, otherwise softmax sampling at that
temperature, restricted to the --top_k most likely tokens when top_k > 0. Each
new token recomputes the model over the last `context` tokens (no KV cache;
fine for small contexts). Prints the prompt and the continuation.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import checkpoint, config as config_lib, parallel
from jaxssl.data import tokenizers
from jaxssl.errors import CheckpointError, ConfigError, InputError
from jaxssl.main import report_input_error
from jaxssl.methods.lm import TOKENIZER_FILE, LanguageModelling
from jaxssl.train import TrainStep

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


def choose_token(rng: jax.Array, logits: jax.Array, temperature: float, top_k: int) -> jax.Array:
    """Next token ids int32 [B] from logits float [B, V]: argmax when temperature == 0,
    else a sample from softmax(logits / temperature) over the top_k largest (all if 0)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k > 0:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def generate(logits_fn: LogitsFn, prompt: np.ndarray, max_new_tokens: int, context: int,
             temperature: float, top_k: int, rng: jax.Array) -> np.ndarray:
    """Appends max_new_tokens tokens to prompt (int [n], n >= 1).

    logits_fn(window int32 [1, context], length int32 scalar) -> logits [1, V]
    for the token after window[:, :length]; the window holds the last
    `context` tokens, left-aligned and PAD-filled.
    """
    tokens = list(np.asarray(prompt, np.int32))
    for i in range(max_new_tokens):
        recent = tokens[-context:]
        window = np.zeros((1, context), np.int32)
        window[0, :len(recent)] = recent
        logits = logits_fn(jnp.asarray(window), jnp.int32(len(recent)))
        tokens.append(int(choose_token(jax.random.fold_in(rng, i), logits, temperature, top_k)[0]))
    return np.asarray(tokens, np.int32)


def load_model(workdir: str, step: int | None = None
               ) -> tuple[LanguageModelling, dict, tokenizers.Tokenizer]:
    """(method, parameters, tokenizer) of the decoder-only 'lm' run in `workdir`, on one
    device, without its data. The tokenizer is the run's saved character vocabulary
    (tokenizer.json) when it has one, else the method's."""
    config = config_lib.load_saved(workdir)
    if config.method != "lm":
        raise ConfigError(f"sampling needs a run of method 'lm', {workdir} holds {config.method!r}")
    if config.lm.architecture != "decoder":
        raise ConfigError(f"sampling needs lm.architecture='decoder', {workdir} holds "
                          f"{config.lm.architecture!r}")
    config.mesh = dict(data=1, fsdp=1, tensor=1)
    train_step = TrainStep.from_spec(config, parallel.make_mesh(config.mesh, jax.devices()[:1]))
    checkpointer = checkpoint.Checkpointer(workdir, 0, config.checkpoint.keep, async_save=False)
    state, _ = checkpointer.restore_intact(train_step.sharded_abstract_state(), step)
    method, tokenizer = train_step.method, train_step.method.tokenizer
    saved = os.path.join(workdir, TOKENIZER_FILE)
    if os.path.isfile(saved):
        with open(saved) as f:
            tokenizer = tokenizers.CharTokenizer.from_json(f.read())
        if tokenizer.vocab_size != method.tokenizer.vocab_size:
            raise CheckpointError(f"{saved} has {tokenizer.vocab_size} token ids, the run's "
                                  f"model {method.tokenizer.vocab_size}")
    return method, state.params, tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxssl.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        method, params, tokenizer = load_model(args.workdir, args.step)
        prompt = (tokenizer.encode(args.prompt) if args.prompt
                  else np.array([tokenizers.EOS_ID]))
        if not len(prompt):
            raise ConfigError("the prompt encodes to no tokens")
    except InputError as error:
        return report_input_error(error, "jaxssl.sample")
    logits_fn = jax.jit(lambda window, length: method.next_token_logits(params, window, length))
    tokens = generate(logits_fn, prompt, args.max_new_tokens, method.spec.length - 1,
                      args.temperature, args.top_k, jax.random.key(args.seed))
    print(tokenizer.decode(tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
