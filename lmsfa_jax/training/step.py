"""The jitted train step: forward/backward on a data-parallel batch, gradient accumulation,
optimiser step and EMA update, over a `TrainState`.

A step whose loss, gradients or new batch statistics hold a NaN or inf changes nothing but the step
counter: no accumulation, no optimiser or EMA update, the old batch statistics; its metrics say
'skipped' (the training loop stops after `config.max_consecutive_nonfinite` of them in a row).

The global batch is sharded along its first axis over the mesh axis 'data' (all devices of all
processes); the state is replicated. Each process holds the rows `process_rows` of every global
batch (all of them in a single-process run). `jax.jit` partitions the computation, so the loss and
gradients are those of the whole batch whatever the number of devices and processes. The state
argument is donated.
"""
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmsfa_jax.losses import segmentation_loss
from lmsfa_jax.training import optimizer as optimizer_lib
from lmsfa_jax.training.state import TrainState, ema_decay

DATA_AXIS = "data"
TRAIN_KEYS = ("images", "boxes", "labels", "valid", "masks")


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis 'data' over `devices` (default: every process's, process by process)."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def process_rows(mesh: Mesh, batch_size: int) -> range:
    """The rows of each global batch that this process's devices hold: the part it builds."""
    spans = sorted((s.start or 0, batch_size if s.stop is None else s.stop) for (s,) in
                   NamedSharding(mesh, PartitionSpec(DATA_AXIS)).addressable_devices_indices_map(
                       (batch_size,)).values())
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError(f"this process's devices hold rows {spans} of the batch, not one block")
    return range(spans[0][0], spans[-1][1])


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """The training arrays of this process's rows of a global batch (`process_rows`) as global
    arrays on the mesh, split along the batch axis."""
    n = len(mesh.local_devices)
    if batch["images"].shape[0] % n:
        raise ValueError(f"batch size {batch['images'].shape[0]} is not divisible by the {n} devices")
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, batch[k]) for k in TRAIN_KEYS}


def replicate(tree, mesh: Mesh):
    """`tree` (the same on every process) as global arrays replicated over the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _all_finite(tree) -> jax.Array:
    """True when no leaf of `tree` holds a NaN or inf."""
    return jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]).all()


def train_step(state: TrainState, batch: dict, *, model, tx: optax.GradientTransformation,
               schedule: optimizer_lib.Schedule, loss_gains: dict, ema: dict) -> tuple[TrainState, dict]:
    """One iteration -> (new state, metrics). metrics: the loss components per image (box, seg,
    cls, dfl, as Ultralytics logs them), their sum 'loss', 'lr', 'grad_norm', 'updated' (1 when
    the optimiser stepped) and 'skipped' (1 when a NaN/inf skipped the step; its losses and
    grad_norm are then reported as 0)."""
    hyper = schedule(state.step)

    def loss_fn(params):
        (feats, mask_coef, protos), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, batch["images"], train=True,
            mutable=["batch_stats"])
        to_f32 = lambda x: x.astype(jnp.float32)  # noqa: E731  (bf16 compute: the loss in float32)
        total, components = segmentation_loss(
            [to_f32(f) for f in feats], to_f32(mask_coef), to_f32(protos), batch,
            model.num_classes, loss_gains)
        return total, (components, updates["batch_stats"])

    grads, (components, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    finite = _all_finite((components, grads, batch_stats))  # else the step changes nothing
    grad_sum = _select(finite, jax.tree.map(jnp.add, state.grad_accum, grads), state.grad_accum)
    batch_stats = _select(finite, batch_stats, state.batch_stats)
    update_now = finite & (state.step - state.last_update_step >= hyper["accumulate"])

    opt_state = optimizer_lib.set_hyperparams(state.opt_state, hyper)
    updates, new_opt_state = tx.update(grad_sum, opt_state, state.params)
    params = _select(update_now, optax.apply_updates(state.params, updates), state.params)
    opt_state = _select(update_now, new_opt_state, state.opt_state)

    ema_updates = state.ema_updates + update_now.astype(jnp.int32)
    d = jnp.where(update_now, ema_decay(ema_updates, ema["decay"], ema["tau"]), 1.0)
    mix = lambda e, m: (d * e + (1 - d) * m).astype(e.dtype)  # noqa: E731
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
        grad_accum=_select(update_now, jax.tree.map(jnp.zeros_like, grad_sum), grad_sum),
        last_update_step=jnp.where(update_now, state.step, state.last_update_step),
        ema_params=jax.tree.map(mix, state.ema_params, params),
        ema_batch_stats=jax.tree.map(mix, state.ema_batch_stats, batch_stats),
        ema_updates=ema_updates)
    losses = {k: jnp.where(finite, v, 0.0) for k, v in components.items()}
    metrics = {**losses, "loss": sum(losses.values()), "lr": hyper["lr"],
               "grad_norm": jnp.where(finite, optax.tree.norm(grads), 0.0),
               "updated": update_now.astype(jnp.float32), "skipped": (~finite).astype(jnp.float32)}
    return new_state, metrics


def make_train_step(model, tx, schedule, config, mesh: Mesh) -> Callable:
    """jit(train_step) with the state replicated (and donated) and the batch sharded over 'data'."""
    step = functools.partial(
        train_step, model=model, tx=tx, schedule=schedule, loss_gains=dict(config.loss),
        ema={"decay": config.ema.decay, "tau": config.ema.tau})
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, in_shardings=(replicated, NamedSharding(mesh, PartitionSpec(DATA_AXIS))),
                   out_shardings=(replicated, replicated), donate_argnums=0)
