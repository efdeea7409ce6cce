"""The one training loop, for every method and stage.

`Trainer(config, workdir)` does everything that can fail on bad input
(config, data, batch size, mesh, an existing checkpoint that does not fit)
before it writes anything to the workdir. `Trainer.run()` then initialises
or resumes the sharded state and trains, logging, evaluating and
checkpointing on the way. SIGTERM makes it save a checkpoint and return.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxssl import (checkpoint, config as config_lib, device_memory, flops as flops_lib,
                    host_memory, logging as log_lib, methods, output_paths, parallel)
from jaxssl.data import pipeline, sources
from jaxssl.errors import CheckpointError, StoppedByUser
from jaxssl.evaluate.representation import eval_batch_key, eval_batch_size
from jaxssl.methods.base import split_variables
from jaxssl.models import flash_attention
from jaxssl.train_step import TrainState, check_finite, make_train_step


def check_saved_assets(assets: dict[str, str], workdir: str) -> None:
    """Raises CheckpointError if a file of `assets` already in `workdir` has other contents."""
    for name, contents in assets.items():
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            with open(path) as f:
                if f.read() != contents:
                    raise CheckpointError(f"{path} differs from the one this config builds (was the "
                                     f"corpus changed?); use a new workdir or restore the file")


def save_assets(assets: dict[str, str], workdir: str) -> None:
    """Writes the method's asset files into `workdir` (see methods/base.py)."""
    for name, contents in assets.items():
        with open(os.path.join(workdir, name), "w") as f:
            f.write(contents)


class Preemption:
    """Records SIGTERM (a preemption) or a first Ctrl-C (SIGINT) so that the loop saves a
    checkpoint and stops at the next step boundary; a second Ctrl-C stops at once
    (KeyboardInterrupt), without that checkpoint."""

    def __init__(self):
        self.requested = False
        self.interrupted = False
        self._previous = {number: signal.signal(number, self._handle)
                          for number in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            print("jaxssl: interrupted: saving a checkpoint after this step (Ctrl-C again "
                  "stops at once, without it)", file=sys.stderr, flush=True)
        self.requested = True

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class TrainStep:
    """The sharded state and the train step of `config` on `mesh`, built from an example
    batch alone: no data source, no workdir. `Trainer` trains them; `jaxssl.aot`
    compiles them for TPU slices from `pipeline.spec_example` (zeros shaped like the
    data source's records).

    `example`: a few records (numpy, batch-major) that fix the model's input shapes.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 method: methods.Method, example: dict[str, np.ndarray]):
        self.config, self.mesh, self.method = config, mesh, method
        self.tx, self.schedule = self.method.optimizer()
        self._example = example
        boxed = jax.eval_shape(self._init_state, jax.random.key(config.seed))
        self.abstract_state = parallel.unboxed_abstract(boxed)
        self.state_shardings = self._state_shardings(boxed)

    @classmethod
    def from_spec(cls, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> "TrainStep":
        """The TrainStep of `config` on `mesh` from its data source's spec: no data read
        (`jaxssl.aot`, `jaxssl.sample`)."""
        method = methods.get(config.method)(config)
        spec = sources.element_spec(config.data.name, config.data.data_dir)
        return cls(config, mesh, method, pipeline.spec_example(method.train_record_spec(spec), 2))

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

    def sharded_abstract_state(self) -> TrainState:
        """The state's shapes and dtypes, each on its sharding: what tracing the train
        step and restoring a checkpoint onto this mesh take."""
        return parallel.abstract_with_shardings(self.abstract_state, self.state_shardings)

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
        # Traced with the mesh in context: a method may read it with
        # jax.sharding.get_abstract_mesh() (e.g. for shard_map losses, methods/clip.py).
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            return jitted.trace(self.sharded_abstract_state(), abstract_batch)

    def trace_eval_step(self) -> jax.stages.Traced:
        """The method's `eval_step` traced for this mesh: the state's variables on their
        shardings and a batch of eval.batch_size records (rounded up to the batch shards,
        as evaluation pads it) plus 'valid', split over the batch axes, and its key.
        NotImplementedError when the method has no per-batch evaluation step."""
        batch_sharding = parallel.batch_sharding(self.mesh)
        size = eval_batch_size(self.config.eval.batch_size, self.mesh)
        abstract_batch = {
            k: jax.ShapeDtypeStruct((size,) + v.shape[1:], v.dtype, sharding=batch_sharding)
            for k, v in {**self._example, "valid": np.ones((1,), bool)}.items()}
        state, shardings = self.abstract_state, self.state_shardings
        variables = parallel.abstract_with_shardings(
            {"params": state.params, **state.method_state},
            {"params": shardings.params, **shardings.method_state})
        key = jax.eval_shape(eval_batch_key, 0)
        abstract_key = jax.ShapeDtypeStruct(key.shape, key.dtype,
                                            sharding=parallel.replicated(self.mesh))
        jitted = jax.jit(self.method.eval_step, out_shardings=batch_sharding)
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            return jitted.trace(variables, abstract_batch, abstract_key)


class Trainer(TrainStep):
    """Validated, ready-to-run training job. Constructing it writes nothing."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str,
                 devices: Sequence[jax.Device] | None = None):
        self.workdir = workdir
        output_paths.check_output_dir(workdir, "--workdir")
        mesh = parallel.make_mesh(config.mesh, devices)
        if mesh.devices.flat[0].platform == "cpu":
            host_memory.keep_freed_memory()
        method = methods.get(config.method)(config)
        data = config.data
        self.train_source = method.select_train_examples(
            sources.get_source(data.name, data.train_split, data.data_dir))
        self.eval_source = sources.get_source(data.name, data.eval_split, data.data_dir)
        self.local_batch = pipeline.per_process_batch_size(
            data.batch_size, parallel.batch_shards(mesh), len(self.train_source),
            jax.process_count())
        super().__init__(config, mesh, method, pipeline.example_batch(self.train_source, 2))
        method.open_data()
        self.checkpointer = checkpoint.Checkpointer(
            workdir, config.checkpoint.every_steps, config.checkpoint.keep,
            config.checkpoint.async_save)
        self.loader = pipeline.train_loader(self.train_source, self.local_batch, config.seed,
                                            jax.process_index(), jax.process_count(),
                                            data.num_workers, data.read_threads,
                                            data.prefetch_batches)
        self._fresh_iterator_state = iter(self.loader).get_state()
        self.resume_step = self._newest_fitting_step()
        if self.resume_step is None:
            # Only a fresh state takes pretrained weights: a resumed run needs neither
            # the checkpoints it started from nor their files.
            method.pretrained.plan()
        self.assets = self.method.assets()
        check_saved_assets(self.assets, workdir)

    def _newest_fitting_step(self) -> int | None:
        """The newest checkpoint step whose metadata reads and fits this run (None if the
        workdir has no checkpoint). A step that does not fit stops the run
        (CheckpointError); one whose metadata is damaged is passed over here, and
        `restore` warns about it when it resumes from an older one (a read the storage
        refuses is a CheckpointError instead: `checkpoint.describe_damaged`)."""
        unreadable, iterator_state = [], self._fresh_iterator_state
        for step in self.checkpointer.all_steps():
            try:
                self.checkpointer.check_fits(step, self.abstract_state)
                self.checkpointer.check_data_fits(step, iterator_state, jax.process_index(),
                                                  jax.process_count())
                self.checkpointer.check_settings_fit(step, self.config)
            except CheckpointError:
                raise
            except Exception as error:  # a truncated or half-written step: try the one before
                unreadable.append(checkpoint.describe_damaged(
                    self.checkpointer.step_directory(step), error))
                continue
            return step
        if unreadable:
            raise CheckpointError(f"no intact checkpoint in {self.checkpointer.directory}: "
                                  + "; ".join(unreadable))
        return None

    def initial_state(self, load_pretrained: bool = True) -> TrainState:
        """Fresh state, created sharded by jit (never whole on one host).

        The method's `load_pretrained` hook (fine-tuning) then swaps in
        pretrained weights, unless `load_pretrained` is False (e.g. for the
        from-initialisation baseline).
        """
        init = jax.jit(lambda rng: nn.meta.unbox(self._init_state(rng)),
                       out_shardings=self.state_shardings)
        state = init(jax.random.key(self.config.seed))
        if load_pretrained:
            state = self.method.load_pretrained(state, self.state_shardings, self.workdir)
        return state

    def restore(self, step: int | None = None, data_iterator=None) -> TrainState:
        """The TrainState of checkpoint `step` (None: the newest intact one) of the workdir,
        on this mesh (`checkpoint.Checkpointer.restore_intact`). `data_iterator` (a grain
        iterator of `self.loader`), when given, is set to the position saved with it.
        Steps passed over as unreadable are listed in `self.unreadable_steps`."""
        state, self.unreadable_steps = self.checkpointer.restore_intact(
            self.sharded_abstract_state(), step, data_iterator)
        return state

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """The method's evaluation of `state`; process 0 also has the method draw its
        pictures of the first `eval.num_pictures` eval images into
        `workdir/pictures/step_<step>.png` (most methods draw none; none when 0)."""
        variables = {"params": state.params, **state.method_state}
        results = self.method.evaluate(variables, self.train_source, self.eval_source,
                                       self.mesh, self.config.eval)
        if jax.process_index() == 0 and self.config.eval.num_pictures:
            batch = pipeline.example_batch(self.eval_source, self.config.eval.num_pictures)
            path = os.path.join(self.workdir, "pictures",
                                f"step_{int(jax.device_get(state.step)):07d}.png")
            self.method.write_pictures(variables, batch, path)
        return results

    def evaluate_random_init(self) -> dict[str, float]:
        """The same evaluation for the encoder at initialisation (step 0)."""
        return self.evaluate(self.initial_state(load_pretrained=False))

    # ------------------------------------------------------------------ loop
    def run(self, stop_at: int | None = None) -> dict[str, float]:
        """Trains to `total_steps`; returns the final evaluation ({} if stopped early).

        SIGTERM, or reaching step `stop_at`, saves a checkpoint and returns
        early, as a preempted job would; the schedule still spans total_steps. Ctrl-C
        saves one too, then raises `errors.StoppedByUser`.
        A non-finite loss, gradient norm or parameter norm raises DivergedError
        (unless `stop_on_nonfinite` is off) before that state is saved; a full disk
        in the workdir, OutputError (CheckpointError while saving a checkpoint). A
        workdir that another run holds is a ConfigError.
        """
        with (output_paths.held_exclusively(self.workdir, lock=jax.process_index() == 0),
              output_paths.disk_full_reported(self.workdir),
              pipeline.iterating(self.loader) as iterator):
            # Chosen again under the lock: another run of the workdir may have saved
            # checkpoints since this Trainer was made (or this Trainer ran before).
            resume_step = self._newest_fitting_step()
            if resume_step is None and self.resume_step is not None:
                raise CheckpointError(f"the checkpoints in {self.checkpointer.directory} were "
                                      f"removed after this run was set up to resume from "
                                      f"step {self.resume_step}")
            self.resume_step = resume_step
            return self._run(iterator, stop_at)

    def _run(self, iterator, stop_at: int | None) -> dict[str, float]:
        config = self.config
        stop_at = config.total_steps if stop_at is None else min(stop_at, config.total_steps)
        if self.resume_step is not None:
            state = self.restore(data_iterator=iterator)
            self.checkpointer.set_aside(self.unreadable_steps)
        else:
            state = self.initial_state()
        traced = self.trace_train_step()
        train_step = traced.lower().compile()
        # Before anything is written: a step too big for this host is a one-line error.
        device_memory.check_step_fits(train_step, self.mesh.local_devices)
        platform = self.mesh.devices.flat[0].platform
        if jax.process_index() == 0:
            notes = [flash_attention.interpreter_note(config.to_dict(), platform)]
            if platform == "cpu":
                notes.append(host_memory.arena_note(
                    config.malloc_arenas, train_step.memory_analysis().temp_size_in_bytes))
            for note in filter(None, notes):
                # on stdout: advice, not a warning (stderr stays one line on bad input)
                print(note, flush=True)
            config_lib.save(config, self.workdir)
            save_assets(self.assets, self.workdir)
        step = int(jax.device_get(state.step))
        flops = flops_lib.traced_flops(traced) / self.mesh.size  # one device's share
        peak, peak_source = log_lib.device_peak_flops(
            jax.devices()[0], config.log.peak_flops_per_device, len(self.mesh.local_devices))
        logger = log_lib.MetricsLogger(self.workdir, config.log.tensorboard, start_step=step)
        progress = log_lib.ProgressBar(config.total_steps, step, config.log.progress_bar)
        preemption = Preemption()
        guard = check_finite if config.stop_on_nonfinite else lambda step, metrics: None
        results: dict[str, float] = {}
        evaluated_at = None  # the step of the newest evaluation in this process
        last_time, last_step = time.perf_counter(), step
        in_flight = None  # (step, metrics) of the previous step
        with contextlib.ExitStack() as cleanup:
            # Every step of the cleanup runs, also after one fails (a last save on a full
            # disk must not leave the signal handlers installed); the last registered first.
            for close in (preemption.restore, logger.close, progress.close,
                          self.checkpointer.close, self.checkpointer.wait):
                cleanup.callback(close)
            while step < stop_at:
                batch = parallel.host_batch_to_global(next(iterator), self.mesh)
                state, metrics = train_step(state, batch)
                step += 1
                # At most one step in flight: the host loads the next batch while this step
                # runs, and a SIGTERM (handled only when Python runs) is seen within a step
                # or two, not a whole logging interval later.
                if in_flight is not None:
                    jax.block_until_ready(in_flight[1])
                    guard(*in_flight)
                in_flight = (step, metrics)
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
                    guard(step, metrics)
                    results, evaluated_at = self.evaluate(state), step
                    logger.write(step, {f"eval/{k}": v for k, v in results.items()})
                    last_time = time.perf_counter()
                # Read once: a signal that comes after it is seen at the next step, not
                # between this save check and the loop's exit (which would stop unsaved).
                stopping = preemption.requested or step == stop_at
                if self.checkpointer.should_save(step) or stopping:
                    guard(step, metrics)  # never save a diverged state
                    self.checkpointer.save(step, state, iterator, config)
                if stopping:
                    break
            # Also when a finished run is started again: it resumes at the end, and the
            # process that evaluated there may have died before its results were saved.
            if step == config.total_steps and evaluated_at != step:
                results = self.evaluate(state)
                logger.write(step, {f"eval/{k}": v for k, v in results.items()})
        if preemption.interrupted and step < config.total_steps:
            saved = self.checkpointer.all_steps()
            raise StoppedByUser(
                f"stopped by Ctrl-C at step {step}; newest checkpoint: "
                + (f"step {saved[0]}; the same command resumes the run" if saved else "none"))
        self.mfu_info = {"flops_per_step_per_device": flops, "peak_flops_per_device": peak,
                         "peak_source": peak_source}
        # A periodic evaluation of a run stopped early is in metrics.jsonl, not a final result.
        return results if step == config.total_steps else {}

