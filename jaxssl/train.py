"""The one training loop, for every method and stage.

`Trainer(config, workdir)` does everything that can fail on bad input
(config, data, batch size, mesh, an existing checkpoint that does not fit)
before it writes anything to the workdir. `Trainer.run()` then initialises
or resumes the sharded state and trains, logging, evaluating and
checkpointing on the way. SIGTERM makes it save a checkpoint and return.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxssl import (checkpoint, config as config_lib, flops as flops_lib, host_memory,
                    logging as log_lib, methods, optim, parallel)
from jaxssl.data import pipeline
from jaxssl.data.sources import get_source
from jaxssl.evaluate.representation import evaluate_encoder
from jaxssl.methods.base import split_variables


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    method_state: Any        # non-gradient collections (batch stats, EMA encoders)
    rng: jax.Array           # base key; step s uses fold_in(rng, s)


def _mean_over_microbatches(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)


def make_train_step(method, tx: optax.GradientTransformation, grad_accum_steps: int,
                    schedule: optax.Schedule):
    """Returns train_step(state, batch) -> (state, metrics), not yet jitted.

    With `grad_accum_steps` = A > 1 the global batch of B is split into A
    micro-batches of B/A (example j goes to micro-batch j mod A, so every
    device holds an equal share of each), gradients and metrics are averaged
    and the method state is threaded through the micro-batches in order.
    Contrastive negatives then come from within each micro-batch.
    """
    grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum_steps == 1:
            (_, (metrics, method_state)), grads = grad_fn(
                state.params, state.method_state, batch, rng, state.step)
        else:
            micro = jax.tree.map(
                lambda x: jnp.swapaxes(
                    x.reshape((x.shape[0] // grad_accum_steps, grad_accum_steps) + x.shape[1:]),
                    0, 1), batch)

            def accumulate(method_state, inputs):
                index, micro_batch = inputs
                (_, (m, new_state)), g = grad_fn(state.params, method_state, micro_batch,
                                                 jax.random.fold_in(rng, index), state.step)
                return new_state, (g, m)

            method_state, (grads, metrics) = jax.lax.scan(
                accumulate, state.method_state, (jnp.arange(grad_accum_steps), micro))
            grads, metrics = _mean_over_microbatches(grads), _mean_over_microbatches(metrics)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=opt_state, method_state=method_state)
        metrics = {**metrics, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}
        return new_state, metrics

    return train_step


def check_saved_assets(assets: dict[str, str], workdir: str) -> None:
    """Raises ValueError if a file of `assets` already in `workdir` has other contents."""
    for name, contents in assets.items():
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            with open(path) as f:
                if f.read() != contents:
                    raise ValueError(f"{path} differs from the one this config builds (was the "
                                     f"corpus changed?); use a new workdir or restore the file")


def save_assets(assets: dict[str, str], workdir: str) -> None:
    """Writes the method's asset files into `workdir` (see methods/base.py)."""
    for name, contents in assets.items():
        with open(os.path.join(workdir, name), "w") as f:
            f.write(contents)


class Preemption:
    """Records SIGTERM so the loop can save and stop at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """Validated, ready-to-run training job. Constructing it writes nothing."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str,
                 devices: Sequence[jax.Device] | None = None):
        self.config, self.workdir = config, workdir
        self.mesh = parallel.make_mesh(config.mesh, devices)
        if self.mesh.devices.flat[0].platform == "cpu":
            host_memory.keep_freed_memory()
        self.method = methods.get(config.method)(config)
        data = config.data
        self.train_source = get_source(data.name, data.train_split, data.data_dir)
        if hasattr(self.method, "select_train_examples"):
            self.train_source = self.method.select_train_examples(self.train_source)
        self.eval_source = get_source(data.name, data.eval_split, data.data_dir)
        self.local_batch = pipeline.per_process_batch_size(
            data.batch_size, parallel.batch_shards(self.mesh), len(self.train_source),
            jax.process_count())
        if hasattr(self.method, "optimizer"):
            self.tx, self.schedule = self.method.optimizer()
        else:
            self.schedule = optim.learning_rate_schedule(config.optim, config.total_steps,
                                                         data.batch_size)
            self.tx = optim.build_optimizer(config.optim, config.total_steps, data.batch_size)
        self._example = pipeline.example_batch(self.train_source, 2)

        boxed = jax.eval_shape(self._init_state, jax.random.key(config.seed))
        self.abstract_state = parallel.unboxed_abstract(boxed)
        self.state_shardings = self._state_shardings(boxed)
        self.checkpointer = checkpoint.Checkpointer(
            workdir, config.checkpoint.every_steps, config.checkpoint.keep,
            config.checkpoint.async_save)
        self.loader = pipeline.train_loader(self.train_source, self.local_batch, config.seed,
                                            jax.process_index(), jax.process_count(),
                                            data.num_workers, data.read_threads,
                                            data.prefetch_batches)
        self.resume_step = self.checkpointer.latest_step()
        if self.resume_step is not None:
            self.checkpointer.check_fits(self.resume_step, self.abstract_state)
            self.checkpointer.check_data_fits(self.resume_step, iter(self.loader).get_state(),
                                              jax.process_index(), jax.process_count())
        self.assets = self.method.assets() if hasattr(self.method, "assets") else {}
        check_saved_assets(self.assets, workdir)

    # ----------------------------------------------------------------- state
    def _init_variables(self, rng: jax.Array) -> dict:
        return self.method.init(rng, self._example)

    def _init_state(self, rng: jax.Array) -> TrainState:
        """Boxed (logically annotated) initial state; optimizer state from unboxed params."""
        init_rng, train_rng = jax.random.split(rng)
        params, method_state = split_variables(self._init_variables(init_rng))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.tx.init(nn.meta.unbox(params)),
                          method_state=method_state, rng=self._training_key(train_rng))

    def _training_key(self, key: jax.Array) -> jax.Array:
        """The train steps' base key: `key` itself, or re-seeded from it under
        `config.prng_impl` when that is not threefry2x32."""
        if self.config.prng_impl == "threefry2x32":
            return key
        return jax.random.key(jax.random.bits(key, dtype=jnp.uint32), impl=self.config.prng_impl)

    def _state_shardings(self, boxed: TrainState) -> TrainState:
        shardings = parallel.tree_shardings(boxed, self.mesh)
        fallback = lambda x: jax.sharding.NamedSharding(
            self.mesh, parallel.fsdp_fallback_spec(x.shape, self.mesh))
        opt_shardings = optax.tree_map_params(
            self.tx, lambda _, sharding: sharding, self.abstract_state.opt_state,
            shardings.params, transform_non_params=fallback)
        return shardings.replace(opt_state=opt_shardings)

    def initial_state(self, load_pretrained: bool = True) -> TrainState:
        """Fresh state, created sharded by jit (never whole on one host).

        A method with a `load_pretrained(state, shardings, workdir) -> state` hook
        (fine-tuning) then swaps in pretrained weights, unless
        `load_pretrained` is False (e.g. for the from-initialisation baseline).
        """
        init = jax.jit(lambda rng: nn.meta.unbox(self._init_state(rng)),
                       out_shardings=self.state_shardings)
        state = init(jax.random.key(self.config.seed))
        if load_pretrained and hasattr(self.method, "load_pretrained"):
            state = self.method.load_pretrained(state, self.state_shardings, self.workdir)
        return state

    # ------------------------------------------------------------ functions
    def compile_train_step(self):
        """The train step compiled for this mesh: (state, batch) -> (state, metrics)."""
        return self.trace_train_step().lower().compile()

    def trace_train_step(self) -> jax.stages.Traced:
        """The train step traced for this mesh (its jaxpr gives the FLOPs: jaxssl.flops)."""
        step_fn = make_train_step(self.method, self.tx, self.config.grad_accum_steps,
                                  self.schedule)
        batch_sharding = parallel.batch_sharding(self.mesh)
        jitted = jax.jit(step_fn, in_shardings=(self.state_shardings, batch_sharding),
                         out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
                         donate_argnums=0)
        abstract_batch = {
            k: jax.ShapeDtypeStruct((self.config.data.batch_size,) + v.shape[1:], v.dtype,
                                    sharding=batch_sharding)
            for k, v in self._example.items()}
        abstract_state = parallel.abstract_with_shardings(self.abstract_state,
                                                          self.state_shardings)
        # Traced with the mesh in context: a method may read it with
        # jax.sharding.get_abstract_mesh() (e.g. for shard_map losses, methods/clip.py).
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            return jitted.trace(abstract_state, abstract_batch)

    @functools.cached_property
    def features_fn(self):
        return jax.jit(self.method.features, out_shardings=parallel.batch_sharding(self.mesh))

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """The method's own evaluation if it has one, else kNN + linear probe on features.

        A method may also define `write_pictures(variables, images, path)`;
        process 0 then writes `workdir/pictures/step_<step>.png` for the first
        `eval.num_pictures` eval images.
        """
        variables = {"params": state.params, **state.method_state}
        if hasattr(self.method, "evaluate"):
            results = self.method.evaluate(variables, self.train_source, self.eval_source,
                                           self.mesh, self.config.eval)
        else:
            results = evaluate_encoder(self.features_fn, variables, self.train_source,
                                       self.eval_source, self.mesh, self.config.eval,
                                       self.train_source.num_classes)
        if hasattr(self.method, "write_pictures") and jax.process_index() == 0:
            images = pipeline.example_batch(self.eval_source, self.config.eval.num_pictures)
            directory = os.path.join(self.workdir, "pictures")
            os.makedirs(directory, exist_ok=True)
            self.method.write_pictures(
                jax.device_get(variables), images["image"],
                os.path.join(directory, f"step_{int(jax.device_get(state.step)):07d}.png"))
        return results

    def evaluate_random_init(self) -> dict[str, float]:
        """The same evaluation for the encoder at initialisation (step 0)."""
        return self.evaluate(self.initial_state(load_pretrained=False))

    # ------------------------------------------------------------------ loop
    def run(self, stop_at: int | None = None) -> dict[str, float]:
        """Trains to `total_steps`; returns the final evaluation ({} if stopped early).

        SIGTERM, or reaching step `stop_at`, saves a checkpoint and returns
        early, as a preempted job would; the schedule still spans total_steps.
        """
        config = self.config
        stop_at = config.total_steps if stop_at is None else min(stop_at, config.total_steps)
        if jax.process_index() == 0:
            config_lib.save(config, self.workdir)
            save_assets(self.assets, self.workdir)
        iterator = iter(self.loader)
        if self.resume_step is not None:
            abstract = parallel.abstract_with_shardings(self.abstract_state, self.state_shardings)
            state = self.checkpointer.restore(self.resume_step, abstract, iterator)
        else:
            state = self.initial_state()
        step = int(jax.device_get(state.step))
        traced = self.trace_train_step()
        train_step = traced.lower().compile()
        flops = flops_lib.traced_flops(traced) / self.mesh.size  # one device's share
        peak, peak_source = log_lib.device_peak_flops(
            jax.devices()[0], config.log.peak_flops_per_device, len(self.mesh.local_devices))
        logger = log_lib.MetricsLogger(self.workdir, config.log.tensorboard)
        progress = log_lib.ProgressBar(config.total_steps, step, config.log.progress_bar)
        preemption = Preemption()
        results: dict[str, float] = {}
        last_time, last_step = time.perf_counter(), step
        in_flight = None  # the previous step's metrics
        try:
            while step < stop_at and not preemption.requested:
                batch = parallel.host_batch_to_global(next(iterator), self.mesh)
                state, metrics = train_step(state, batch)
                step += 1
                # At most one step in flight: the host loads the next batch while this step
                # runs, and a SIGTERM (handled only when Python runs) is seen within a step
                # or two, not a whole logging interval later.
                jax.block_until_ready(in_flight)
                in_flight = metrics
                if step % config.log.every_steps == 0 or step == stop_at:
                    metrics = jax.device_get(metrics)
                    seconds = (time.perf_counter() - last_time) / (step - last_step)
                    throughput = {
                        "step_time_s": seconds,
                        "examples_per_s": config.data.batch_size / seconds,
                        "mfu": flops / seconds / peak if flops else 0.0,
                    }
                    logger.write(step, {**metrics, **throughput})
                    progress.update(step - last_step, float(metrics["loss"]),
                                    throughput["examples_per_s"])
                    last_time, last_step = time.perf_counter(), step
                if config.eval.every_steps and step % config.eval.every_steps == 0:
                    results = self.evaluate(state)
                    logger.write(step, {f"eval/{k}": v for k, v in results.items()})
                    last_time = time.perf_counter()
                if self.checkpointer.should_save(step) or step == stop_at or preemption.requested:
                    self.checkpointer.save(step, state, iterator, config)
            if step == config.total_steps and not (
                    config.eval.every_steps and step % config.eval.every_steps == 0):
                results = self.evaluate(state)
                logger.write(step, {f"eval/{k}": v for k, v in results.items()})
        finally:
            self.checkpointer.wait()
            self.checkpointer.close()
            progress.close()
            logger.close()
            preemption.restore()
        self.final_state = state
        self.mfu_info = {"flops_per_step_per_device": flops, "peak_flops_per_device": peak,
                         "peak_source": peak_source}
        # A periodic evaluation of a run stopped early is in metrics.jsonl, not a final result.
        return results if step == config.total_steps else {}


def load_and_validate(config_spec: str, overrides: dict[str, str], workdir: str
                      ) -> tuple[ml_collections.ConfigDict, Trainer]:
    """Config -> (resolved config, Trainer); raises ValueError/FileNotFoundError on bad input."""
    config = config_lib.load(config_spec, overrides)
    parallel.maybe_initialize_distributed(config.distributed)
    return config, Trainer(config, workdir)
