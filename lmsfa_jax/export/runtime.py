"""Runs an exported model file: ONNX through ONNX Runtime, or a StableHLO artefact through JAX.

    model = load("lmsfa_n_640x640.onnx", "onnxruntime")
    outputs = model.run(images)      # images (B, H, W, 3) float32 -> {output name: numpy array}
    model.metadata                   # see `metadata`
    detect = detector(model, conf_threshold=0.25, iou_threshold=0.7, max_det=300)
    detections = detect(images)      # host `postprocess.Detections`, as the JAX model's

`detector` applies `postprocess.postprocess` (jitted) to a model-only export; an end-to-end
export already returns the detections.
"""
import functools
import pathlib
from typing import Callable, NamedTuple

import jax
import numpy as np

from lmsfa_jax.errors import InputError
from lmsfa_jax.evaluation import postprocess as pp
from lmsfa_jax.export import metadata as metadata_lib
from lmsfa_jax.export import require
from lmsfa_jax.export.signature import INPUT
from lmsfa_jax.export.stablehlo import load_stablehlo

BACKENDS = ("onnxruntime", "stablehlo")


class ExportedModel(NamedTuple):
    run: Callable[[np.ndarray], dict]
    metadata: dict


def load(path, backend: str) -> ExportedModel:
    """The model file at `path` run by `backend` ('onnxruntime' or 'stablehlo')."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if backend == "onnxruntime":
        return _load_onnx(path)
    if backend == "stablehlo":
        metadata = metadata_lib.read_sidecar(path)
        run = load_stablehlo(path)
        return ExportedModel(lambda images: jax.device_get(run(images)), metadata)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _load_onnx(path: pathlib.Path) -> ExportedModel:
    ort = require("onnxruntime")
    try:
        session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise InputError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
    metadata = metadata_lib.from_props(session.get_modelmeta().custom_metadata_map, path)
    names = [output.name for output in session.get_outputs()]
    return ExportedModel(lambda images: dict(zip(names, session.run(names, {INPUT: images}))), metadata)


def detector(model: ExportedModel, **postprocess_kwargs) -> Callable[[np.ndarray], pp.Detections]:
    """images -> host Detections. postprocess_kwargs: `postprocess.postprocess`'s, used for a
    model-only export (an end-to-end export has its own, in metadata['postprocess'])."""
    if model.metadata["end_to_end"]:
        return lambda images: pp.Detections(**model.run(images))
    post = jax.jit(functools.partial(pp.postprocess, **postprocess_kwargs))

    def detect(images):
        outputs = model.run(images)
        return jax.device_get(post(outputs["decoded"], outputs["protos"]))
    return detect
