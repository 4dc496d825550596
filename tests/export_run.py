"""A small trained-like run for the export tests: WORKDIR/config.json and one checkpoint (step
STEP) whose EMA variables have randomised weights and BatchNorm statistics, so re-parameterisation
folds non-trivial values. No training, no dataset."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmsfa_jax import LMSFA
from lmsfa_jax.evaluation import postprocess as pp
from lmsfa_jax.model import init_variables
from lmsfa_jax.training import checkpoints
from lmsfa_jax.training.state import create_train_state

CLASS_NAMES = ["adipose", "bone", "ligamentum_flavum", "nerve"]
IMAGE_SIZE = 64                       # the run's square size (predict); exports use 64×96 too
STEP = 7
HEAD_LAYER = 26                       # the LMSH head's index in the layer table
KERNEL_GAIN = 6 ** 0.5                # PyTorch's U(±1/√fan_in) has variance 1/(3·fan_in); He's is 2/fan_in


def randomised_variables(seed: int = 0) -> dict:
    """LMSF-A n variables (numpy) with BatchNorm statistics drawn at random (means ±0.2, variances
    0.5–2) and BatchNorm scales/biases perturbed, so every fold matters. As in a trained model,
    kernels keep the signal (He scale), boxes are a few cells wide (DFL biases favour short
    distances), so that masks are cropped, and class biases are N(0, 1)."""
    variables = jax.device_get(init_variables(LMSFA(num_classes=len(CLASS_NAMES)), seed))
    rng = np.random.default_rng(seed)

    def statistic(path, a):
        return rng.uniform(0.5, 2.0, a.shape) if path[-1].key == "var" else rng.normal(0, 0.2, a.shape)

    def param(path, a):
        names = [p.key for p in path]
        if "bn" in names and names[-1] in ("scale", "bias"):
            return a + rng.normal(0, 0.1, a.shape)
        if names[-1] == "kernel":
            return a * KERNEL_GAIN
        if names[0] == f"model_{HEAD_LAYER}" and names[-2:] == ["cv3", "bias"]:
            return rng.normal(0, 1, a.shape)
        if names[0] == f"model_{HEAD_LAYER}" and names[-2:] == ["cv2", "bias"]:
            return np.tile(-0.8 * np.arange(a.shape[0] // 4), 4)
        return a
    as_float32 = lambda fn: lambda path, a: np.asarray(fn(path, a), np.float32)  # noqa: E731
    return {"params": jax.tree_util.tree_map_with_path(as_float32(param), variables["params"]),
            "batch_stats": jax.tree_util.tree_map_with_path(as_float32(statistic), variables["batch_stats"])}


def make_run(workdir, seed: int = 0) -> dict:
    """Writes WORKDIR/config.json and checkpoints/STEP -> the checkpoint's (EMA) variables."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"seed": seed, "model": {"num_classes": len(CLASS_NAMES), "scale": "n", "depthwise_impl": "auto"},
              "data": {"name": "not_built", "data_dir": str(workdir / "none"), "image_size": IMAGE_SIZE,
                       "class_names": CLASS_NAMES}}
    (workdir / "config.json").write_text(json.dumps(config))
    variables = randomised_variables(seed)
    state = create_train_state(variables, optax.sgd(0.1)).replace(step=jnp.asarray(STEP, jnp.int32))
    ckpt = checkpoints.Checkpointer(workdir, async_save=False)
    ckpt.save(state, epoch=1)
    ckpt.close()
    return variables


_deploy_apply = jax.jit(LMSFA(num_classes=len(CLASS_NAMES), deploy=True).apply)


def deploy_outputs(deploy_variables, images) -> dict:
    """The JAX deploy model's {decoded, protos} (host arrays), the reference for every export."""
    decoded, protos = _deploy_apply(deploy_variables, images)
    return {"decoded": np.asarray(decoded), "protos": np.asarray(protos)}


def postprocess(decoded, protos, **settings):
    """`postprocess.postprocess` (jitted: much faster than its eager while loop) -> host Detections."""
    return jax.device_get(jax.jit(functools.partial(pp.postprocess, **settings))(decoded, protos))


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def assert_outputs_close(actual: dict, expected: dict, tolerance: float = 1e-4) -> None:
    """Model outputs equal within `tolerance` relative error, decoded per part (boxes, class
    probabilities, mask coefficients: their scales differ)."""
    nc = len(CLASS_NAMES)
    parts = {"boxes": slice(0, 4), "probabilities": slice(4, 4 + nc), "coefficients": slice(4 + nc, None)}
    for part, columns in parts.items():
        error = relative_error(actual["decoded"][..., columns], expected["decoded"][..., columns])
        assert error < tolerance, f"decoded {part}: relative error {error:.2e}"
    error = relative_error(actual["protos"], expected["protos"])
    assert error < tolerance, f"protos: relative error {error:.2e}"


def assert_same_detections(actual: dict, expected, image_hw, tolerance: float = 1e-4) -> None:
    """End-to-end outputs (dict) equal `postprocess.Detections`: the same count per image, each
    expected instance matched by one of the same class with box and score within `tolerance`
    (relative to the image size / 1) and mask IoU >= 0.99; empty rows zero / -1 / False."""
    for b in range(len(expected.count)):
        count = int(expected.count[b])
        assert int(actual["count"][b]) == count
        unmatched = list(range(count))
        for i in range(count):
            for j in unmatched:
                if (actual["classes"][b, j] == expected.classes[b, i]
                        and abs(actual["scores"][b, j] - expected.scores[b, i]) < tolerance
                        and np.max(np.abs(actual["boxes"][b, j] - expected.boxes[b, i])) < tolerance * max(image_hw)):
                    unmatched.remove(j)
                    a, e = actual["masks"][b, j], np.asarray(expected.masks[b, i])
                    union = np.sum(a | e)
                    assert union == 0 or np.sum(a & e) / union >= 0.99, f"image {b} instance {i}: mask IoU"
                    break
            else:
                raise AssertionError(f"image {b}: instance {i} (class {expected.classes[b, i]}, score "
                                     f"{expected.scores[b, i]:.5f}) has no match")
        assert np.all(actual["classes"][b, count:] == -1) and not np.any(actual["masks"][b, count:])
        assert np.all(actual["boxes"][b, count:] == 0) and np.all(actual["scores"][b, count:] == 0)


def test_images(batch: int, hw, seed: int = 0) -> np.ndarray:
    """(batch, H, W, 3) float32 in [0, 1], each image different in kind: noise, dark noise, a
    gradient, coarse blocks (so a per-image mix-up cannot pass)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    kinds = [lambda: rng.random((h, w, 3)), lambda: 0.3 * rng.random((h, w, 3)),
             lambda: np.broadcast_to(np.linspace(0, 1, w)[None, :, None], (h, w, 3)),
             lambda: rng.random((h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)]
    return np.stack([kinds[i % len(kinds)]() for i in range(batch)]).astype(np.float32)
