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
from lmsfa_jax.model import cpu_compiler_options
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


SKIP, ACCUMULATE, UPDATE = 0, 1, 2  # what an iteration does with its gradients (`apply_gradients`)


def apply_gradients(state: TrainState, grads, batch_stats, hyper: dict, finite, *,
                    tx: optax.GradientTransformation, ema: dict) -> tuple[TrainState, jax.Array, jax.Array]:
    """Accumulates `grads` and, when `hyper['accumulate']` iterations have passed since the last
    optimiser step, steps the optimiser on the summed gradients and folds the new weights into
    the EMA. Returns (state after the iteration, updated flag, norm of the applied gradient).

    `finite` False (a NaN/inf iteration) changes nothing but the step counter. The three cases run
    under `lax.switch`: accumulation-only iterations do not pay for the optimiser and the EMA, and
    no select over every gradient leaf ties the backward pass to the finiteness check (which made
    XLA:CPU compile the step three times longer). The norm is that of the summed gradient the
    optimiser received (before clipping), 0 when it did not step.
    """
    due = state.step - state.last_update_step >= hyper["accumulate"]
    action = jnp.where(finite, jnp.where(due, UPDATE, ACCUMULATE), SKIP)

    def skip(_):
        return state, jnp.zeros((), jnp.float32)

    def accumulate(_):
        return state.replace(grad_accum=jax.tree.map(jnp.add, state.grad_accum, grads),
                             batch_stats=batch_stats), jnp.zeros((), jnp.float32)

    def update(_):
        grad_sum = jax.tree.map(jnp.add, state.grad_accum, grads)
        opt_state = optimizer_lib.set_hyperparams(state.opt_state, hyper)
        updates, opt_state = tx.update(grad_sum, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_updates = state.ema_updates + 1
        d = ema_decay(ema_updates, ema["decay"], ema["tau"])
        mix = lambda e, m: (d * e + (1 - d) * m).astype(e.dtype)  # noqa: E731
        return state.replace(
            params=params, batch_stats=batch_stats, opt_state=opt_state,
            grad_accum=jax.tree.map(jnp.zeros_like, grad_sum), last_update_step=state.step,
            ema_params=jax.tree.map(mix, state.ema_params, params),
            ema_batch_stats=jax.tree.map(mix, state.ema_batch_stats, batch_stats),
            ema_updates=ema_updates), optax.tree.norm(grad_sum)

    new_state, grad_norm = jax.lax.switch(action, (skip, accumulate, update), None)
    return new_state.replace(step=state.step + 1), action == UPDATE, grad_norm


def _all_finite(losses: dict, grads, batch_stats) -> jax.Array:
    """True when the losses, gradients and batch statistics hold no NaN or inf. The gradients are
    checked through their global norm (one reduction: a NaN or inf anywhere, or a norm beyond
    float32's range, makes it non-finite)."""
    stats = jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(batch_stats)]).all()
    return jnp.isfinite(sum(losses.values()) + optax.tree.norm(grads)) & stats


def train_step(state: TrainState, batch: dict, *, model, tx: optax.GradientTransformation,
               schedule: optimizer_lib.Schedule, loss_gains: dict, ema: dict) -> tuple[TrainState, dict]:
    """One iteration -> (new state, metrics). metrics: the loss components per image (box, seg,
    cls, dfl, as Ultralytics logs them), their sum 'loss', 'lr', 'updated' (1 when the optimiser
    stepped), 'grad_norm', the norm of the gradient the optimiser applied (the sum accumulated since
    its last step; 0 when it did not step, so mean it over the 'updated' iterations), and 'skipped'
    (1 when a NaN/inf skipped the iteration; its losses are then reported as 0)."""
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
    finite = _all_finite(components, grads, batch_stats)  # else the iteration changes nothing
    new_state, updated, grad_norm = apply_gradients(state, grads, batch_stats, hyper, finite, tx=tx, ema=ema)
    losses = {k: jnp.where(finite, v, 0.0) for k, v in components.items()}
    metrics = {**losses, "loss": sum(losses.values()), "lr": hyper["lr"], "grad_norm": grad_norm,
               "updated": updated.astype(jnp.float32), "skipped": (~finite).astype(jnp.float32)}
    return new_state, metrics


def make_train_step(model, tx, schedule, config, mesh: Mesh) -> Callable:
    """jit(train_step) with the state replicated (and donated) and the batch sharded over 'data'."""
    step = functools.partial(
        train_step, model=model, tx=tx, schedule=schedule, loss_gains=dict(config.loss),
        ema={"decay": config.ema.decay, "tau": config.ema.tau})
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, in_shardings=(replicated, NamedSharding(mesh, PartitionSpec(DATA_AXIS))),
                   out_shardings=(replicated, replicated), donate_argnums=0,
                   compiler_options=cpu_compiler_options("training"))
