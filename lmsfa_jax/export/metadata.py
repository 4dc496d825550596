"""The metadata an exported model carries: class names, image size, letterbox convention, input
and output layout, post-processing settings and the source checkpoint with its step.

ONNX keeps it in the model's metadata_props (one JSON-encoded value per top-level key, readable
in Netron and through ONNX Runtime's `custom_metadata_map`); a StableHLO artefact has a JSON
sidecar, `<file>.json`.
"""
import datetime
import importlib.metadata
import json
import pathlib

from lmsfa_jax.data.transforms import PAD_VALUE
from lmsfa_jax.errors import InputError
from lmsfa_jax.export.signature import DYNAMIC_BATCH, ExportSpec, input_layout, output_layout

LETTERBOX = {
    "description": "resize keeping the aspect ratio to fit (H, W) (r = min(H / h, W / w), linear "
                   "interpolation, new size rounded), pad evenly on both sides with pad_value; an "
                   "original point (x, y) maps to the input as (x·r + pad_x, y·r + pad_y)",
    "pad_value": PAD_VALUE,
}
REQUIRED = ("model", "class_names", "image_size", "end_to_end", "postprocess", "outputs")


def build(spec: ExportSpec, *, file_format: str, class_names, source: dict, **details) -> dict:
    """The metadata of an export. source: {workdir, checkpoint, step}; details: format-specific
    fields (opset, platforms)."""
    return {
        "producer": f"lmsfa_jax {importlib.metadata.version('lmsfa_jax')}",
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "format": file_format,
        "model": {"architecture": "LMSF-A", "scale": spec.scale, "num_classes": spec.num_classes,
                  "deploy": True},
        "class_names": list(class_names),
        "image_size": list(spec.image_hw),
        "batch": spec.batch_dim,
        "letterbox": LETTERBOX,
        "input": input_layout(spec),
        "end_to_end": spec.end_to_end,
        "postprocess": dict(spec.postprocess, multi_label=False) if spec.end_to_end else None,
        "outputs": output_layout(spec),
        "source": source,
        **details,
    }


def to_props(metadata: dict) -> dict[str, str]:
    """-> ONNX metadata_props: each value JSON-encoded."""
    return {key: json.dumps(value) for key, value in metadata.items()}


def from_props(props, where) -> dict:
    """ONNX metadata_props (a mapping of str to JSON str) -> the metadata dict."""
    try:
        return _complete({key: json.loads(value) for key, value in props.items()}, where)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: unreadable metadata ({e})") from None


def sidecar_path(path) -> pathlib.Path:
    path = pathlib.Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path, metadata: dict) -> pathlib.Path:
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps(metadata, indent=2) + "\n")
    return sidecar


def read_sidecar(path) -> dict:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise InputError(f"{sidecar} not found: the metadata of {path} (written beside it by "
                         "python -m lmsfa_jax.export)")
    try:
        return _complete(json.loads(sidecar.read_text()), sidecar)
    except json.JSONDecodeError as e:
        raise InputError(f"{sidecar}: not valid JSON ({e})") from None


def _complete(metadata, where) -> dict:
    missing = [key for key in REQUIRED if key not in metadata] if isinstance(metadata, dict) else REQUIRED
    if missing:
        raise InputError(f"{where}: no lmsfa_jax export metadata (missing {', '.join(missing)}); "
                         "export the model with python -m lmsfa_jax.export")
    return metadata


def check_for_predict(metadata: dict, config, where) -> None:
    """InputError unless `predict` can run the export with the run config: the same class count,
    the config's square image size, batch 1 (or dynamic)."""
    size, classes = config.data.image_size, config.model.num_classes
    if metadata["model"]["num_classes"] != classes:
        raise InputError(f"{where} has {metadata['model']['num_classes']} classes but the config's "
                         f"model.num_classes is {classes}: export it from this run, or pass the run's --config")
    if metadata["image_size"] != [size, size]:
        h, w = metadata["image_size"]
        raise InputError(f"{where} takes {h}×{w} images but the config's data.image_size is {size}; "
                         + (f"pass --config.data.image_size={h}" if h == w else
                            f"predict letterboxes to a square: export with --image_size {size}"))
    if metadata["batch"] not in (1, DYNAMIC_BATCH):
        raise InputError(f"{where} takes batches of {metadata['batch']}; predict runs one image at a time: "
                         "export with --batch 1 or --batch dynamic")
