"""Checks of a run config's values, before anything heavy starts (data, compilation, devices).

    check_config(config)   # InputError naming every bad field, e.g.
    # invalid config: config.batch_size=0 must be an integer >= 1; config.data.image_size=100 must be
    # a multiple of 32 (the largest stride), e.g. 96 or 128

Types are already enforced by ml_collections (an override of an int field with "abc" fails); these
are the ranges. Fields a config does not have are not checked.
"""
import math
from typing import Any, Callable

from lmsfa_jax.anchors import STRIDES
from lmsfa_jax.errors import InputError
from lmsfa_jax.model import COMPUTE_DTYPES, SCALES
from lmsfa_jax.nn.conv import DEPTHWISE_IMPLS

# (value is valid, what a valid value is: text, or a function of the bad value giving it)
Rule = tuple[Callable[[Any], bool], str | Callable[[Any], str]]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(low: int) -> Rule:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _number(low: float, high: float = math.inf, *, open_low=False, open_high=False) -> Rule:
    def valid(v):
        return (_is_number(v) and (v > low if open_low else v >= low)
                and (v < high if open_high else v <= high))
    low_text = f"> {low}" if open_low else f">= {low}"
    high_text = "" if high == math.inf else f" and {'<' if open_high else '<='} {high}"
    return valid, f"a finite number {low_text}{high_text}"


def _one_of(choices) -> Rule:
    return (lambda v: v in choices), f"one of {sorted(choices)}"


def _image_size(v) -> bool:
    return _is_int(v) and v >= STRIDES[-1] and v % STRIDES[-1] == 0


def _image_size_expected(v) -> str:
    text = f"a multiple of {STRIDES[-1]} (the largest stride)"
    if _is_number(v) and v > STRIDES[-1]:
        below = int(v) // STRIDES[-1] * STRIDES[-1]
        text += f", e.g. {below} or {below + STRIDES[-1]}"
    return text


PROBABILITY = _number(0, 1)
FRACTION = _number(0, 1, open_high=True)
GAIN = _number(0)

RULES: dict[str, Rule] = {
    "batch_size": _int_at_least(1),
    "epochs": _int_at_least(1),
    "dtype": _one_of(COMPUTE_DTYPES),
    "max_consecutive_nonfinite": _int_at_least(1),
    "model.num_classes": _int_at_least(1),
    "model.scale": _one_of(SCALES),
    "model.depthwise_impl": _one_of(DEPTHWISE_IMPLS),
    "data.image_size": (_image_size, _image_size_expected),
    "data.max_instances": _int_at_least(1),
    "data.mask_ratio": ((lambda v: v == 4), "4 (the mask prototypes are at image_size / 4)"),
    "data.num_workers": _int_at_least(0),
    "data.mosaic": PROBABILITY,
    "data.close_mosaic": _int_at_least(0),
    "data.translate": PROBABILITY,
    "data.scale": FRACTION,
    "data.degrees": GAIN,
    "data.shear": GAIN,
    "data.hsv_h": PROBABILITY,
    "data.hsv_s": PROBABILITY,
    "data.hsv_v": PROBABILITY,
    "data.fliplr": PROBABILITY,
    "synthetic.num_train": _int_at_least(1),
    "synthetic.num_val": _int_at_least(1),
    "synthetic.size": _int_at_least(STRIDES[-1]),
    "optimizer.name": ((lambda v: str(v).lower() in ("sgd", "adamw")), "'sgd' or 'adamw'"),
    "optimizer.lr0": _number(0, open_low=True),
    "optimizer.lrf": GAIN,
    "optimizer.momentum": FRACTION,
    "optimizer.b2": FRACTION,
    "optimizer.weight_decay": GAIN,
    "optimizer.nominal_batch_size": _int_at_least(1),
    "optimizer.warmup_epochs": GAIN,
    "optimizer.warmup_min_steps": _int_at_least(0),
    "optimizer.warmup_momentum": FRACTION,
    "optimizer.warmup_bias_lr": GAIN,
    "optimizer.clip_grad_norm": _number(0, open_low=True),
    "ema.decay": PROBABILITY,
    "ema.tau": _number(0, open_low=True),
    "loss.box": GAIN,
    "loss.cls": GAIN,
    "loss.dfl": GAIN,
    "eval.every_epochs": _int_at_least(0),
    "eval.batch_size": _int_at_least(1),
    "eval.conf_threshold": PROBABILITY,
    "eval.iou_threshold": PROBABILITY,
    "eval.max_det": _int_at_least(1),
    "checkpoint.every_epochs": _int_at_least(1),
    "checkpoint.keep_latest": _int_at_least(1),
}

_MISSING = object()


def _field(config, dotted: str):
    value = config
    for key in dotted.split("."):
        value = value.get(key, _MISSING) if hasattr(value, "get") else _MISSING
        if value is _MISSING:
            break
    return value


def config_problems(config) -> list[str]:
    """One 'config.<field>=<value> must be ...' line per field of `config` that breaks its rule."""
    problems = []
    for dotted, (valid, expected) in RULES.items():
        value = _field(config, dotted)
        if value is not _MISSING and not valid(value):
            problems.append(f"config.{dotted}={value!r} must be "
                            f"{expected(value) if callable(expected) else expected}")
    return problems


def check_config(config) -> None:
    """Raises InputError naming every field of `config` with an invalid value."""
    problems = config_problems(config)
    if problems:
        raise InputError("invalid config: " + "; ".join(problems))
