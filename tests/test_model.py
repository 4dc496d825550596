"""LMSFA: parameter count, GFLOPs, train-mode behaviour, BatchNorm momentum and input checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmsfa_jax import model as model_lib
from lmsfa_jax.model import LMSFA, init_variables, jit_inference
from lmsfa_jax.summary import count_params, summarize

REFERENCE_PARAMS = 1_829_623 - 16   # the reference's total minus the fixed DFL projection
REFERENCE_GFLOPS = 8.168            # conv-only, nc = 4, 640×640


@pytest.fixture(scope="module")
def model_and_variables():
    model = LMSFA(num_classes=4, scale="n")
    variables = init_variables(model)
    return model, variables


def test_trainable_parameters_match_reference(model_and_variables):
    _, variables = model_and_variables
    assert set(variables) == {"params", "batch_stats"}
    assert count_params(variables["params"]) == REFERENCE_PARAMS


def test_gflops_at_640_within_half_percent(model_and_variables):
    model, variables = model_and_variables
    rows, totals = summarize(model, variables, 640)
    assert abs(totals["gflops"] - REFERENCE_GFLOPS) / REFERENCE_GFLOPS < 0.005, totals
    assert [r["params"] for r in rows][:3] == [464, 4_672, 4_096]
    assert rows[26]["shape"][1] == (1, 160, 160, 32)


@pytest.mark.parametrize("batch", [1, 2])
def test_train_forward_shapes_finite(model_and_variables, batch):
    model, variables = model_and_variables
    images = jax.random.uniform(jax.random.key(batch), (batch, 96, 64, 3))
    (maps, mask_coef, protos), updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, images)
    assert [m.shape for m in maps] == [(batch, 12, 8, 68), (batch, 6, 4, 68), (batch, 3, 2, 68)]
    n = 12 * 8 + 6 * 4 + 3 * 2
    assert mask_coef.shape == (batch, n, 32)
    assert protos.shape == (batch, 24, 16, 32)
    for x in jax.tree.leaves((maps, mask_coef, protos, updates)):
        assert np.isfinite(np.asarray(x)).all()
    decoded, protos_eval = jax.jit(model.apply)(variables, images)
    assert decoded.shape == (batch, n, 4 + 4 + 32)
    assert protos_eval.shape == (batch, 24, 16, 32)


def test_batchnorm_running_stats_use_momentum_0_97(model_and_variables):
    model, variables = model_and_variables
    images = jax.random.uniform(jax.random.key(3), (2, 64, 64, 3))
    _, updates = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats"],
        capture_intermediates=lambda m, _: m.path == ("model_0", "conv")))(variables, images)
    # Layer 0's BatchNorm sees the conv output; its batch statistics drive the update.
    conv_out = np.asarray(updates["intermediates"]["model_0"]["conv"]["__call__"][0], np.float64)
    batch_mean, batch_var = conv_out.mean(axis=(0, 1, 2)), conv_out.var(axis=(0, 1, 2))
    old = variables["batch_stats"]["model_0"]["bn"]
    new = updates["batch_stats"]["model_0"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.97 * np.asarray(old["mean"]) + 0.03 * batch_mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.97 * np.asarray(old["var"]) + 0.03 * batch_var,
                               rtol=1e-5, atol=1e-6)


def test_ssff_batchnorm3d_uses_its_stack_statistics_and_pytorch_momentum_0_1(model_and_variables):
    """SSFF runs its Conv3d on P4 and P5 before upsampling them; its BatchNorm3d statistics must
    still be those of the upsampled (B, 3, H3, W3, C) stack, and it keeps PyTorch's momentum 0.1."""
    model, variables = model_and_variables
    images = jax.random.uniform(jax.random.key(4), (2, 64, 64, 3))
    _, updates = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats"],
        capture_intermediates=lambda m, _: m.path == ("model_24", "conv3d")))(variables, images)
    slices = [np.asarray(y, np.float64) for y in updates["intermediates"]["model_24"]["conv3d"]["__call__"][0]]
    size = slices[0].shape[1]
    assert [y.shape[1] for y in slices] == [size, size // 2, size // 4]
    stack = np.stack([np.repeat(np.repeat(y, size // y.shape[1], 1), size // y.shape[2], 2) for y in slices], 1)
    old, new = variables["batch_stats"]["model_24"]["bn"], updates["batch_stats"]["model_24"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.9 * np.asarray(old["mean"]) + 0.1 * stack.mean(axis=(0, 1, 2, 3)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.9 * np.asarray(old["var"]) + 0.1 * stack.var(axis=(0, 1, 2, 3)),
                               rtol=1e-5, atol=1e-6)


def test_head_uses_groupnorm_not_batchnorm(model_and_variables):
    _, variables = model_and_variables
    head = "model_26"
    assert "proto" in variables["batch_stats"][head]          # Proto keeps YOLOv8's Conv+BN
    assert set(variables["batch_stats"][head]) == {"proto"}   # every other head unit: GroupNorm
    assert "gn" in variables["params"][head]["share_conv_0"]


@pytest.mark.parametrize("shape,dtype,message", [
    ((1, 100, 64, 3), jnp.float32, "multiples of 32"),
    ((1, 64, 64, 1), jnp.float32, "3 channels"),
    ((1, 64, 64, 3), jnp.uint8, "floating point"),
    ((64, 64, 3), jnp.float32, "4-D"),
])
def test_bad_inputs_raise_clear_value_error(model_and_variables, shape, dtype, message):
    model, variables = model_and_variables
    with pytest.raises(ValueError, match=message):
        model.apply(variables, jnp.zeros(shape, dtype))


def test_other_scales_build():
    for scale, c_out in (("s", 32), ("m", 48)):
        model = LMSFA(num_classes=2, scale=scale)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
        assert shapes["params"]["model_0"]["conv"]["kernel"].shape == (3, 3, 3, c_out)
    with pytest.raises(ValueError, match="scale must be one of"):
        LMSFA(scale="q").init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_jit_inference_compiles_without_ynnpack_fusions_on_cpu():
    def forward(w, x):
        return jnp.tanh(x @ w).sum(axis=0)
    w, x = jnp.linspace(-1, 1, 64 * 32).reshape(64, 32), jnp.linspace(0, 1, 256 * 64).reshape(256, 64)
    np.testing.assert_allclose(jit_inference(forward)(w, x), jax.jit(forward)(w, x), rtol=1e-5, atol=1e-5)
    text = jit_inference(forward).lower(w, x).compile().as_text()
    if model_lib.cpu_compiler_options("inference"):   # an XLA:CPU that has the option (and YNNPACK)
        assert "ynn_fusion" in jax.jit(forward).lower(w, x).compile().as_text()
        assert "ynn_fusion" not in text
    else:
        assert jax.default_backend() != "cpu" or "ynn_fusion" not in jax.jit(forward).lower(w, x).compile().as_text()
