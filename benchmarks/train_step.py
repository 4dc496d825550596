"""Train-step speed: compile time and steady-state images/s of the jitted step (batch 8 at 640 and
320 px by default), on all local devices, with synthetic images and targets.

    python benchmarks/train_step.py [--sizes 640,320] [--batch 8] [--steps 10] [--dtype bfloat16]
"""
import argparse
import time

import jax
import numpy as np

from lmsfa_jax.data import augment, synthetic
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.model import init_variables, model_from_config
from lmsfa_jax.training import optimizer, state as state_lib, step as step_lib


def make_batch(batch_size: int, size: int, max_instances: int) -> dict:
    rows = []
    for i in range(batch_size):
        image, objects = synthetic.generate_image(np.random.default_rng(i), size)
        sample = {"image": image, "labels": np.array([l for l, _ in objects], np.int32),
                  "polygons": [[p] for _, p in objects]}
        targets, _ = augment.to_targets(sample, max_instances, 4)
        rows.append({"images": image.astype(np.float32) / 255, **targets})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def benchmark(size: int, batch_size: int, steps: int, dtype: str) -> dict:
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
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - t0
    return {"size": size, "batch": batch_size, "compile_s": compile_s, "step_ms": 1000 * seconds / steps,
            "images_per_s": steps * batch_size / seconds, "loss": float(metrics["loss"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="640,320", help="comma-separated image sizes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after one warm-up step")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    print(f"devices: {jax.devices()}  dtype: {args.dtype}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = benchmark(size, args.batch, args.steps, args.dtype)
        print(f"batch {r['batch']} at {r['size']} px: compile {r['compile_s']:.1f} s, "
              f"step {r['step_ms']:.1f} ms, {r['images_per_s']:.1f} images/s (loss {r['loss']:.2f})", flush=True)


if __name__ == "__main__":
    main()
