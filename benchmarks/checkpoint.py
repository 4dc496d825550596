"""Checkpoint save cost: the flat format `Checkpointer` writes (one array per dtype) against the
one-array-per-leaf format it wrote before, for the default model's AdamW train state.

    python benchmarks/checkpoint.py [--saves 3] [--workdir /tmp/lmsfa_ckpt_bench]

Each save is waited for; wall and CPU seconds (all threads: orbax writes on its own) per save.
"""
import resource
import shutil
import time

import jax
import orbax.checkpoint as ocp
from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.model import init_variables, model_from_config
from lmsfa_jax.training import checkpoints, config as config_lib, optimizer, state as state_lib


def define_flags(flag_values):
    flags.DEFINE_integer("saves", 3, "timed saves per format", flag_values=flag_values)
    flags.DEFINE_string("workdir", "/tmp/lmsfa_ckpt_bench", "scratch directory (deleted)", flag_values=flag_values)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _per_leaf_save(directory):
    """The earlier format: every leaf of the state and of the EMA variables its own array."""
    manager = ocp.CheckpointManager(directory, item_names=("state", "ema", "meta"))

    def save(state, step):
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), ema=ocp.args.StandardSave(state.ema_variables()),
            meta=ocp.args.JsonSave({"epoch": step, "step": step})))
        manager.wait_until_finished()
    return save, manager.close


def _flat_save(directory):
    checkpointer = checkpoints.Checkpointer(directory)

    def save(state, step):
        checkpointer.save(state.replace(step=state.step + step), epoch=step)
        checkpointer.wait()
    return save, checkpointer.close


def main(argv=None):
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    config = config_lib.default_config()
    config.optimizer.name = "adamw"
    tx = optimizer.make_optimizer(config)
    state = state_lib.create_train_state(init_variables(model_from_config(config), 0), tx)
    print(f"state: {len(jax.tree.leaves(state))} arrays, "
          f"{sum(x.nbytes for x in jax.tree.leaves(state)) / 1e6:.1f} MB")
    results = {}
    for name, make in (("flat (one array per dtype)", _flat_save), ("one array per leaf", _per_leaf_save)):
        directory = f"{args.workdir}/{name.split()[0]}"
        shutil.rmtree(directory, ignore_errors=True)
        save, close = make(directory)
        save(state, 0)   # warm-up
        wall, cpu = time.perf_counter(), _cpu_seconds()
        for step in range(1, args.saves + 1):
            save(state, step)
        results[name] = ((time.perf_counter() - wall) / args.saves, (_cpu_seconds() - cpu) / args.saves)
        close()
        shutil.rmtree(directory, ignore_errors=True)
        print(f"{name:<28} {results[name][0]:.2f} s wall, {results[name][1]:.2f} s CPU per save", flush=True)
    return results


if __name__ == "__main__":
    cli.run(main)
