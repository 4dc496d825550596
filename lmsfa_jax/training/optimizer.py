"""The reference (Ultralytics 8.x) optimiser recipe: parameter groups, warm-up and LR schedule,
gradient accumulation to a nominal batch, weight decay on the 'decay' group, SGD or AdamW.

Parameter groups (Ultralytics `build_optimizer`): 'bias' = every `bias` leaf (convs and norms),
'no_decay' = norm scales (BatchNorm `bn`, GroupNorm `gn`), 'decay' = the rest, i.e. conv kernels and
the head's three per-level Scale scalars (a Scale is not a norm layer, so Ultralytics decays it).

Schedule of iteration i (one micro-batch; E = epochs, n = steps per epoch, e = i // n):
  lr(e)     = lr0 * ((1 - e / E) * (1 - lrf) + lrf)          linear, stepped per epoch
  warm-up   i <= W = max(round(warmup_epochs * n), warmup_min_steps), interpolating over [0, W]:
            bias lr warmup_bias_lr -> lr(e), other lrs 0 -> lr(e), momentum warmup_momentum -> momentum,
            accumulate 1 -> nominal / batch
  after     accumulate = max(round(nominal / batch), 1); the optimiser steps when
            i - (iteration of the last step) >= accumulate, on the sum of the accumulated gradients.
The weight decay is weight_decay * batch * accumulate / nominal.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

GROUPS = ("bias", "decay", "no_decay")
NORM_MODULES = ("bn", "gn")


def group_of(path) -> str:
    """The parameter group of a variable from its tree path (keys of the params tree)."""
    names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
    if names[-1] == "bias":
        return "bias"
    if names[-1] == "scale" and len(names) > 1 and names[-2] in NORM_MODULES:
        return "no_decay"
    return "decay"


def param_groups(params):
    """Same tree as `params` with each leaf replaced by its group name."""
    return jax.tree_util.tree_map_with_path(lambda path, _: group_of(path), params)


def accumulate_steps(batch_size: int, nominal_batch_size: int) -> int:
    return max(round(nominal_batch_size / batch_size), 1)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Per-iteration hyper-parameters (see the module docstring); jittable in `step`."""
    lr0: float
    lrf: float
    epochs: int
    steps_per_epoch: int
    warmup_steps: int            # W; 0 disables the warm-up
    warmup_bias_lr: float
    momentum: float
    warmup_momentum: float
    accumulate: int              # after the warm-up

    @classmethod
    def from_config(cls, config, steps_per_epoch: int) -> "Schedule":
        opt = config.optimizer
        warmup = (max(round(opt.warmup_epochs * steps_per_epoch), opt.warmup_min_steps)
                  if opt.warmup_epochs > 0 else 0)
        return cls(lr0=opt.lr0, lrf=opt.lrf, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                   warmup_steps=warmup, warmup_bias_lr=opt.warmup_bias_lr, momentum=opt.momentum,
                   warmup_momentum=opt.warmup_momentum,
                   accumulate=accumulate_steps(config.batch_size, opt.nominal_batch_size))

    def __call__(self, step) -> dict:
        """-> {'bias_lr', 'lr', 'momentum'} float32 scalars and 'accumulate' int32 at iteration `step`."""
        step = jnp.asarray(step, jnp.float32)
        epoch = jnp.floor(step / self.steps_per_epoch)
        lr = self.lr0 * (jnp.maximum(1 - epoch / self.epochs, 0) * (1 - self.lrf) + self.lrf)
        accumulate = jnp.float32(self.accumulate)
        momentum = jnp.float32(self.momentum)
        bias_lr = lr
        if self.warmup_steps > 0:
            in_warmup = step <= self.warmup_steps
            t = jnp.clip(step / self.warmup_steps, 0, 1)
            ramp = lambda start, end: start + t * (end - start)  # noqa: E731
            bias_lr = jnp.where(in_warmup, ramp(self.warmup_bias_lr, lr), lr)
            lr = jnp.where(in_warmup, ramp(0.0, lr), lr)
            momentum = jnp.where(in_warmup, ramp(self.warmup_momentum, self.momentum), momentum)
            accumulate = jnp.where(in_warmup, jnp.maximum(1.0, jnp.round(ramp(1.0, accumulate))), accumulate)
        return {"bias_lr": bias_lr.astype(jnp.float32), "lr": lr.astype(jnp.float32),
                "momentum": momentum.astype(jnp.float32), "accumulate": accumulate.astype(jnp.int32)}


def _scale_by_group_lr(bias_lr, lr) -> optax.GradientTransformation:
    """Multiplies updates by -bias_lr on the 'bias' group and by -lr elsewhere."""
    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, u: u * -(bias_lr if group_of(path) == "bias" else lr).astype(u.dtype), updates)
        return scaled, state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _decay_mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: group_of(path) == "decay", params)


def make_optimizer(config) -> optax.GradientTransformation:
    """SGD (Nesterov) or AdamW with clipping, group weight decay and per-group LRs.

    The returned transformation's state is an `optax.InjectHyperparamsState` whose hyperparams
    ('bias_lr', 'lr', 'momentum', 'weight_decay') the train step sets from `Schedule` each step.
    """
    opt = config.optimizer
    name = opt.name.lower()
    if name not in ("sgd", "adamw"):
        raise ValueError(f"config.optimizer.name must be 'sgd' or 'adamw', got {opt.name!r}")
    accumulate = accumulate_steps(config.batch_size, opt.nominal_batch_size)
    weight_decay = opt.weight_decay * config.batch_size * accumulate / opt.nominal_batch_size

    def recipe(bias_lr, lr, momentum, weight_decay):
        clip = optax.clip_by_global_norm(opt.clip_grad_norm)
        decay = optax.add_decayed_weights(weight_decay, mask=_decay_mask)
        if name == "sgd":  # PyTorch SGD: coupled decay, then Nesterov momentum (dampening 0)
            return optax.chain(clip, decay, optax.trace(decay=momentum, nesterov=True),
                               _scale_by_group_lr(bias_lr, lr))
        # PyTorch AdamW: decoupled decay; Ultralytics keeps beta1 = momentum fixed (no warm-up).
        return optax.chain(clip, optax.scale_by_adam(b1=opt.momentum, b2=opt.b2), decay,
                           _scale_by_group_lr(bias_lr, lr))

    return optax.inject_hyperparams(recipe)(
        bias_lr=opt.warmup_bias_lr, lr=opt.lr0, momentum=opt.momentum, weight_decay=weight_decay)


def set_hyperparams(opt_state: optax.InjectHyperparamsState, values: dict) -> optax.InjectHyperparamsState:
    """Returns opt_state with the 'bias_lr', 'lr', 'momentum' hyperparams replaced by `values`'."""
    hyperparams = dict(opt_state.hyperparams)
    for key in ("bias_lr", "lr", "momentum"):
        hyperparams[key] = jnp.asarray(values[key], hyperparams[key].dtype)
    return opt_state._replace(hyperparams=hyperparams)
