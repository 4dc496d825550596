"""`TrainState`: everything a run carries from step to step, as one pytree (checkpointed whole)."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """step: iterations (micro-batches) done; last_update_step: iteration of the last optimiser
    step (-1 before the first); grad_accum: gradients summed since then (params' tree);
    ema_updates: optimiser steps folded into the EMA."""
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    grad_accum: Any
    last_update_step: jax.Array
    ema_params: Any
    ema_batch_stats: Any
    ema_updates: jax.Array

    def ema_variables(self) -> dict:
        """The EMA model's variables, what validation and exported checkpoints use."""
        return {"params": self.ema_params, "batch_stats": self.ema_batch_stats}


def create_train_state(variables, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 from model variables {'params', 'batch_stats'}; the EMA starts equal
    to the model (as Ultralytics' ModelEMA deep copy). Built by one jitted program (not one small
    compilation per leaf shape, which cost seconds at every start), so every leaf is a new buffer:
    the (donating) train step consumes the state, and `variables` stay usable."""
    def fresh(params, batch_stats):
        copy = lambda tree: jax.tree.map(lambda x: x + 0, tree)  # noqa: E731  (jit returns an input as is)
        params, batch_stats = copy(params), copy(batch_stats)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params),
            grad_accum=jax.tree.map(jnp.zeros_like, params), last_update_step=jnp.full((), -1, jnp.int32),
            ema_params=copy(params), ema_batch_stats=copy(batch_stats), ema_updates=jnp.zeros((), jnp.int32))
    return jax.jit(fresh)(variables["params"], variables.get("batch_stats", {}))


def ema_decay(updates, decay: float, tau: float):
    """EMA decay after `updates` optimiser steps: decay * (1 - exp(-updates / tau))."""
    return decay * (1 - jnp.exp(-jnp.asarray(updates, jnp.float32) / tau))
