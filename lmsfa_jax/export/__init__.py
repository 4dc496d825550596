"""Export of the re-parameterised deploy model for deployment: ONNX (ONNX Runtime, TensorRT) and
serialized StableHLO (any XLA runtime), optionally with post-processing inside the graph.

    python -m lmsfa_jax.export --workdir runs/peld --format onnx [--end_to_end]   # see __main__

    from lmsfa_jax.export import load_stablehlo
    run = load_stablehlo("runs/peld/export/lmsfa_n_640x640.stablehlo")   # no model code, no config
    outputs = run(images)        # (B, H, W, 3) float32 in [0, 1] -> {"decoded": ..., "protos": ...}

Modules: `signature` (settings, input/output layout, the JAX function), `onnx_graph` (graph
builder), `onnx_network` (the layer table as ONNX nodes), `onnx_postprocess` (post-processing as
ONNX nodes), `onnx_model` (the ONNX file), `stablehlo` (jax.export), `metadata`, `runtime`
(running an exported file). ONNX needs the `export` extra: pip install 'lmsfa_jax[export]'.
"""
import importlib

from lmsfa_jax.errors import InputError
from lmsfa_jax.export.stablehlo import load_stablehlo

EXTRA_INSTALL = "pip install 'lmsfa_jax[export]'"


def require(module: str):
    """Imports `module` of the `export` extra (onnx, onnxruntime), or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{module} is not installed; ONNX export and the onnxruntime backend need the "
                         f"'export' extra: {EXTRA_INSTALL}") from None


__all__ = ["load_stablehlo", "require", "EXTRA_INSTALL"]
