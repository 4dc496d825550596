"""PyTorch/Ultralytics state dicts <-> Flax variables of the training-form `LMSFA`.

Names follow the reference model (`model.{i}.…`): Flax module `model_2/m_0/token_mixer_0` is
PyTorch `model.2.m.0.token_mixer.0`. Layouts: Conv2d OIHW <-> HWIO, Conv3d OIDHW <-> DHWIO,
ConvTranspose2d (in, out, kH, kW) <-> (kH, kW, in, out). BatchNorm/GroupNorm `weight` is Flax
`scale`; `running_mean`/`running_var` live in the `batch_stats` collection. The DFL conv weight
(0..15) is a constant of the network, checked on import and written on export.
"""
import dataclasses
import pathlib
import pickle
import re
import zipfile
import zlib
from typing import Any, Callable, Iterator, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lmsfa_jax.anchors import REG_MAX
from lmsfa_jax.errors import InputError, first_line
from lmsfa_jax.model import INIT_IMAGE_SHAPE, LMSFA

DFL_KEY_SUFFIX = ".dfl.conv.weight"
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def _torch_module_name(path: tuple[str, ...]) -> str:
    """('model_26', 'cv4_0_1', 'gn') -> 'model.26.cv4.0.1.gn'."""
    return ".".join(re.sub(r"_(\d+)(?=_|$)", r".\1", name) for name in path)


def _leaf_converters(collection: str, path: tuple[str, ...]) -> tuple[str, Callable, Callable]:
    """(torch leaf name, torch->flax array fn, flax->torch array fn) for one variable."""
    leaf, parent = path[-1], path[-2]
    same = lambda a: a  # noqa: E731
    if collection == "batch_stats":
        return {"mean": "running_mean", "var": "running_var"}[leaf], same, same
    if leaf == "kernel":
        if parent == "upsample":  # ConvTranspose2d: (in, out, kH, kW) <-> (kH, kW, in, out)
            swap = lambda a: np.transpose(a, (2, 3, 0, 1))  # noqa: E731
            return "weight", swap, swap
        return "weight", _oihw_to_hwio, _hwio_to_oihw
    if leaf == "scale" and parent.startswith("scale"):  # the head's learnable Scale
        return "scale", same, same
    if leaf == "scale":  # BatchNorm / GroupNorm affine weight
        return "weight", same, same
    if leaf == "bias":
        return "bias", same, same
    raise ValueError(f"no PyTorch name for variable {collection}/{'/'.join(path)}")


def _oihw_to_hwio(a):
    return np.transpose(a, tuple(range(2, a.ndim)) + (1, 0))


def _hwio_to_oihw(a):
    n = a.ndim
    return np.transpose(a, (n - 1, n - 2) + tuple(range(n - 2)))


@dataclasses.dataclass(frozen=True)
class _Entry:
    collection: str
    path: tuple[str, ...]
    torch_name: str
    to_flax: Callable
    to_torch: Callable


def _entries(variables: Mapping) -> Iterator[tuple[_Entry, Any]]:
    for collection in ("params", "batch_stats"):
        flat = flax.traverse_util.flatten_dict(dict(variables.get(collection, {})))
        for path, value in flat.items():
            leaf_name, to_flax, to_torch = _leaf_converters(collection, path)
            name = f"{_torch_module_name(path[:-1])}.{leaf_name}"
            yield _Entry(collection, path, name, to_flax, to_torch), value


def variable_shapes(num_classes: int = 4, scale: str = "n") -> Mapping:
    """Shape/dtype tree of the training-form variables (no computation)."""
    model = LMSFA(num_classes=num_classes, scale=scale)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(INIT_IMAGE_SHAPE, jnp.float32))


def _check_dfl(name: str, value) -> str | None:
    expected = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    value = np.asarray(value)
    if value.shape != expected.shape or not np.allclose(value, expected):
        return f"{name}: expected the fixed DFL projection 0..{REG_MAX - 1} with shape {expected.shape}"
    return None


@dataclasses.dataclass
class LoadReport:
    """What a non-strict load did: torch names loaded, and what was skipped and why."""
    loaded: list[str]
    missing: list[str]          # model variables with no tensor in the state dict
    unexpected: list[str]       # state-dict tensors the model has no place for
    mismatched: list[str]       # "name: state dict (shape) vs model (shape)"

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        for title, items in (("missing from the state dict", self.missing),
                             ("unexpected in the state dict", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if items:
                lines.append(f"{len(items)} {title}:")
                lines.extend(f"  {item}" for item in items)
        return "\n".join(lines)


def _match(template: Mapping, state_dict: Mapping):
    """Map state-dict tensors onto `template`'s variables; returns (flat new values, report)."""
    remaining = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
    report, values = LoadReport([], [], [], []), {}
    for entry, ref in _entries(template):
        if entry.torch_name not in remaining:
            report.missing.append(entry.torch_name)
            continue
        array = np.asarray(remaining.pop(entry.torch_name), dtype=np.float32)
        converted = entry.to_flax(array)
        if tuple(converted.shape) != tuple(ref.shape):
            expected = tuple(entry.to_torch(np.zeros(ref.shape)).shape)
            report.mismatched.append(f"{entry.torch_name}: state dict {tuple(array.shape)} "
                                     f"vs model {expected}")
            continue
        values[(entry.collection,) + entry.path] = converted
        report.loaded.append(entry.torch_name)
    for name in list(remaining):
        if name.endswith(DFL_KEY_SUFFIX):
            problem = _check_dfl(name, remaining.pop(name))
            if problem:
                report.mismatched.append(problem)
    report.unexpected.extend(remaining)
    return values, report


def from_torch_state_dict(state_dict: Mapping[str, Any], num_classes: int = 4,
                          scale: str = "n") -> dict:
    """Strictly convert a PyTorch state dict (name -> array, PyTorch layouts) to Flax variables.

    Returns {'params', 'batch_stats'} for `LMSFA(num_classes, scale)`. Raises ValueError listing
    every missing, unexpected and mis-shaped key if the state dict does not fit exactly.
    """
    values, report = _match(variable_shapes(num_classes, scale), state_dict)
    if report.missing or report.unexpected or report.mismatched:
        raise ValueError(f"state dict does not match LMSFA(num_classes={num_classes}, "
                         f"scale={scale!r}):\n{report.summary()}")
    return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in values.items()})


def load_matching_torch_weights(variables: Mapping, state_dict: Mapping[str, Any]):
    """Copy every state-dict tensor whose name and shape match into `variables` (e.g. COCO
    weights into a 4-class model). Returns (new variables, LoadReport); the input is unchanged."""
    values, report = _match(variables, state_dict)
    flat = flax.traverse_util.flatten_dict(jax.tree.map(lambda a: a, dict(variables)))
    flat.update({k: jnp.asarray(v) for k, v in values.items()})
    return flax.traverse_util.unflatten_dict(flat), report


def to_torch_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """Training-form Flax variables -> PyTorch state dict (numpy, PyTorch layouts and names),
    in the reference's key set (including the DFL constant)."""
    out = {}
    for entry, value in _entries(variables):
        out[entry.torch_name] = np.array(entry.to_torch(np.asarray(value, np.float32)), order="C")
    head = _torch_module_name(_head_path(variables))
    out[head + DFL_KEY_SUFFIX] = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    return out


def _head_path(variables: Mapping) -> tuple[str, ...]:
    names = [k for k in variables["params"] if k.startswith("model_")]
    return (max(names, key=lambda k: int(k.split("_")[1])),)


def load_state_dict_file(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a state dict (name -> array) from `.npz` or a PyTorch `.pt`/`.pth` file.

    Weight files are data, never code: `.npz` is read with allow_pickle=False and `.pt` with
    `torch.load(weights_only=True)` (tensors and plain containers only). A `.pt` may hold a state
    dict or a dict with one under 'ema', 'model' or 'state_dict'. A file that needs more (a pickled
    Ultralytics model) is refused with an InputError that explains how to convert it to `.npz`;
    so is an unreadable file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix in (".pt", ".pth"):
        return _read_torch(path)
    raise InputError(f"{path}: unsupported weights format {path.suffix!r} (use .npz, .pt or .pth)")


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):  # else numpy would try (and refuse) to unpickle it
        raise InputError(f"{path}: not an .npz file (numpy.savez writes a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as error:
        if "allow_pickle" in str(error):  # an object array: pickled Python objects
            raise InputError(f"{path}: holds pickled Python objects, which are never loaded; save "
                             "numeric arrays only (numpy.savez(path, **state_dict))") from None
        raise InputError(f"{path}: damaged .npz ({first_line(error)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputError(f"{path}: damaged .npz ({type(error).__name__}: {first_line(error)})") from None


def _conversion_hint(path: pathlib.Path) -> str:
    """How to turn a trusted pickled (Ultralytics) checkpoint into an .npz state dict."""
    npz = path.with_suffix(".npz")
    return (f"if you trust the file, convert it once to .npz where the code that made it is installed "
            f"(e.g. torch and ultralytics): python -c \"import numpy as np, torch; "
            f"c = torch.load('{path}', weights_only=False); m = c.get('ema') or c['model']; "
            f"np.savez('{npz}', **{{k: v.float().numpy() for k, v in m.state_dict().items()}})\" "
            f"and pass {npz} instead")


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # pylint: disable=g-import-not-at-top  (optional: only for .pt files)
    except ImportError:
        raise InputError(f"reading {path} needs PyTorch (pip install torch), or convert it to .npz "
                         "(numpy.savez(path, **state_dict)) where PyTorch is installed") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's restricted unpickler refused the file
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if needs is None:
            detail = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(error))
            raise InputError(f"{path}: not a readable PyTorch file "
                             f"({detail.group(1) if detail else 'damaged'})") from None
        raise InputError(f"{path}: not loaded: besides tensors it holds pickled Python objects (it "
                         f"needs {needs.group(1)}), and unpickling those can run any code stored in "
                         f"the file; {_conversion_hint(path)}") from None
    except (RuntimeError, OSError, EOFError) as error:  # not a zip / truncated archive
        raise InputError(f"{path}: not a readable PyTorch file ({first_line(error)})") from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = next((obj[k] for k in ("ema", "model", "state_dict") if isinstance(obj.get(k), dict)), None)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: no state dict found (a dict of tensors, or one under 'ema', "
                         "'model' or 'state_dict')")
    return {k: (v.float() if v.is_floating_point() else v).detach().cpu().numpy() for k, v in obj.items()}
