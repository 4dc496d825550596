"""Train-step speed: compile time and steady-state images/s of the jitted step (batch 8 at 640 and
320 px by default), on all local devices, with synthetic images and targets.

    python benchmarks/train_step.py [--sizes 640,320] [--batch 8] [--steps 10] [--dtype bfloat16]
"""
import time

import jax
import numpy as np
from absl import flags

from lmsfa_jax import cli, host_memory
from lmsfa_jax.data import augment, synthetic
from lmsfa_jax.model import init_variables, model_from_config
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import optimizer, state as state_lib, step as step_lib


def make_batch(batch_size: int, size: int, max_instances: int) -> dict:
    """A host batch of synthetic images (`synthetic.generate_image`) with their training targets."""
    rows = []
    for i in range(batch_size):
        image, objects = synthetic.generate_image(np.random.default_rng(i), size)
        sample = {"image": image, "labels": np.array([l for l, _ in objects], np.int32),
                  "polygons": [[p] for _, p in objects]}
        targets, _ = augment.to_targets(sample, max_instances, 4)
        rows.append({"images": image.astype(np.float32) / 255, **targets})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def compiled_step(size: int, batch_size: int, dtype: str):
    """-> (compiled train step, initial state, sharded batch, compile seconds) with the default
    recipe at `dtype`, the batch split over all local devices."""
    config = config_lib.default_config()
    config.batch_size, config.dtype = batch_size, dtype
    model = model_from_config(config)
    tx = optimizer.make_optimizer(config)
    mesh = step_lib.make_mesh()
    schedule = optimizer.Schedule.from_config(config, steps_per_epoch=100)
    train_step = step_lib.make_train_step(model, tx, schedule, config, mesh)
    state = step_lib.replicate(state_lib.create_train_state(init_variables(model, 0), tx), mesh)
    batch = step_lib.shard_batch(make_batch(batch_size, size, config.data.max_instances), mesh)
    t0 = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    return compiled, state, batch, time.perf_counter() - t0


def time_steps(compiled, state, batch, steps: int) -> tuple[float, object, dict]:
    """One warm-up step, then `steps` timed ones -> (seconds per step, state, last metrics)."""
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    return (time.perf_counter() - t0) / steps, state, metrics


def define_flags(flag_values):
    flags.DEFINE_list("sizes", ["640", "320"], "image sizes", flag_values=flag_values)
    flags.DEFINE_integer("batch", 8, "global batch size", flag_values=flag_values)
    flags.DEFINE_integer("steps", 10, "timed steps after one warm-up step", flag_values=flag_values)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype", flag_values=flag_values)


def main(argv=None):
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)  # no cache: compile times are real
    print(f"devices: {jax.devices()}  dtype: {args.dtype}  huge pages for large host buffers: "
          f"{'on' if host_memory.huge_pages_enabled() else 'off'}")
    for size in map(int, args.sizes):
        compiled, state, batch, compile_s = compiled_step(size, args.batch, args.dtype)
        seconds, _, metrics = time_steps(compiled, state, batch, args.steps)
        print(f"batch {args.batch} at {size} px: compile {compile_s:.1f} s, step {1e3 * seconds:.1f} ms, "
              f"{args.batch / seconds:.1f} images/s (loss {float(metrics['loss']):.2f})", flush=True)


if __name__ == "__main__":
    cli.run(main, huge_pages=True)
