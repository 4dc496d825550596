"""Serialized StableHLO (`jax.export`) of an exported function, and its loader.

    data = serialize(fn, spec, platforms=("cpu", "cuda", "tpu"))      # bytes, weights included
    run = load_stablehlo("lmsfa_n_640x640.stablehlo")
    outputs = run(images)       # images (B, H, W, 3) float32 -> {output name: array}

The artefact holds the whole computation with the weights as constants, lowered for each of
`platforms`; loading it needs JAX only (no model code, no config). Its layout is the one
`signature` describes; the metadata lives in the sidecar `<file>.json` (`metadata`).
"""
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp

from lmsfa_jax.errors import InputError
from lmsfa_jax.export.signature import DYNAMIC_BATCH, ExportSpec
from lmsfa_jax.model import jit_inference

PLATFORMS = ("cpu", "cuda", "tpu")


def serialize(fn: Callable, spec: ExportSpec, platforms=PLATFORMS) -> bytes:
    """`fn` (images -> dict of arrays) traced at spec's input shape, lowered for `platforms`."""
    batch = jax.export.symbolic_shape(DYNAMIC_BATCH)[0] if spec.batch is None else spec.batch
    images = jax.ShapeDtypeStruct((batch, *spec.image_hw, 3), jnp.float32)
    return bytes(jax.export.export(jax.jit(fn), platforms=tuple(platforms))(images).serialize())


def load_stablehlo(path) -> Callable:
    """A serialized export (`serialize`) -> its jitted function, images -> {output name: array}."""
    path = pathlib.Path(path).expanduser()
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {path}") from None
    except Exception as e:  # flatbuffer / version errors come in many types
        raise InputError(f"{path}: not a serialized StableHLO export ({type(e).__name__}: {e})") from None
    return jit_inference(exported.call)
