"""Re-parameterisation: deploy variables compute the training-form function (eval mode)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmsfa_jax import LMSFA, reparameterize
from lmsfa_jax.model import init_variables
from lmsfa_jax.nn import C2fPro, Conv, Conv2dBN, RepVGGDW, SSFF
from lmsfa_jax.nn.conv import depthwise_conv2d
from lmsfa_jax.summary import count_params

REFERENCE_DEPLOY_PARAMS = 1_820_647 - 16


def randomize_norms(variables, key):
    """Non-default BN statistics/affines (defaults 0/1 would hide folding mistakes)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, leaf), k in zip(leaves, keys):
        name = path[-1].key
        if name in ("var",):
            leaf = jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5)
        elif name in ("mean", "bias"):
            leaf = 0.1 * jax.random.normal(k, leaf.shape)
        elif name == "scale" and leaf.ndim == 1:
            leaf = jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def assert_close(a, b, rtol=1e-4, what=""):
    a, b = np.asarray(a), np.asarray(b)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


def _inputs(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


BLOCKS = [
    ("Conv", lambda d: Conv(16, 3, 2, deploy=d), (2, 16, 24, 8)),
    ("Conv2dBN", lambda d: Conv2dBN(12, deploy=d), (2, 8, 12, 8)),
    ("RepVGGDW", lambda d: RepVGGDW(deploy=d), (2, 8, 12, 16)),
    ("C2fPro", lambda d: C2fPro(32, n=2, deploy=d), (2, 8, 12, 32)),
]


@pytest.mark.parametrize("name,make,shape", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_block_equivalence(name, make, shape):
    x = _inputs(shape, seed=1)
    train_form = make(False)
    variables = randomize_norms(train_form.init(jax.random.key(0), x), jax.random.key(1))
    deploy_vars = reparameterize(variables)
    expected = train_form.apply(variables, x)
    actual = make(True).apply(deploy_vars, x)
    assert "batch_stats" not in deploy_vars
    assert_close(actual, expected, what=name)


def test_ssff_equivalence():
    xs = [_inputs((2, 8, 12, 16), seed=1), _inputs((2, 4, 6, 32), seed=2), _inputs((2, 2, 3, 64), seed=3)]
    module = SSFF(16)
    variables = randomize_norms(module.init(jax.random.key(0), xs), jax.random.key(2))
    assert "bn" not in reparameterize(variables)["params"]
    assert_close(SSFF(16, deploy=True).apply(reparameterize(variables), xs), module.apply(variables, xs),
                 what="SSFF")


@pytest.fixture(scope="module")
def random_network():
    model = LMSFA(num_classes=4)
    variables = init_variables(model)
    return model, randomize_norms(variables, jax.random.key(5))


@pytest.mark.parametrize("batch", [1, 3])
def test_whole_network_equivalence_non_square(random_network, batch):
    model, variables = random_network
    images = jax.random.uniform(jax.random.key(batch), (batch, 96, 64, 3))
    deploy_model = LMSFA(num_classes=4, deploy=True)
    expected, protos = jax.jit(model.apply)(variables, images)
    actual, protos_d = jax.jit(deploy_model.apply)(jax.jit(reparameterize)(variables), images)
    assert float(jnp.abs(actual[..., :4] - expected[..., :4]).max()) <= 1e-2
    assert_close(actual[..., 4:], expected[..., 4:], what="probabilities and mask coefficients")
    assert_close(protos_d, protos, what="protos")


def test_jit_is_pure_and_counts(random_network):
    _, variables = random_network
    before = jax.tree.map(np.array, variables)
    deploy_vars = jax.jit(reparameterize)(variables)
    eager = reparameterize(variables)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, variables))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), deploy_vars, eager)
    assert set(deploy_vars) == {"params"}
    assert count_params(deploy_vars["params"]) == REFERENCE_DEPLOY_PARAMS
    shapes = jax.eval_shape(LMSFA(num_classes=4, deploy=True).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert jax.tree.structure(shapes) == jax.tree.structure(deploy_vars)


def test_golden_deploy_output(golden, golden_variables, golden_input):
    deploy_vars = jax.jit(reparameterize)(golden_variables)
    decoded, _ = jax.jit(LMSFA(num_classes=4, deploy=True).apply)(deploy_vars, golden_input)
    decoded = np.asarray(decoded).transpose(0, 2, 1)
    for key in ("fused_decoded", "decoded"):
        ref = golden[key]
        box_err = float(np.abs(decoded[:, :4] - ref[:, :4]).max())
        assert box_err <= 1e-2, f"{key} boxes: worst absolute error {box_err:.3g} px"
        assert_close(decoded[:, 4:8], ref[:, 4:8], what=f"{key} class probabilities")
        assert_close(decoded[:, 8:], ref[:, 8:], what=f"{key} mask coefficients")


@pytest.mark.parametrize("k", [1, 3, 5])
def test_depthwise_impls_agree(k):
    """Outputs and both gradients ('shift' has its own backward pass)."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 6))
    kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 6))
    dy = jax.random.normal(jax.random.key(2), (2, 9, 7, 6))
    y_shift, vjp_shift = jax.vjp(lambda x, w: depthwise_conv2d(x, w, "shift"), x, kernel)
    y_lax, vjp_lax = jax.vjp(lambda x, w: depthwise_conv2d(x, w, "lax"), x, kernel)
    np.testing.assert_allclose(y_shift, y_lax, rtol=1e-5, atol=1e-5)
    for g_shift, g_lax in zip(vjp_shift(dy), vjp_lax(dy)):
        assert g_shift.shape == g_lax.shape
        np.testing.assert_allclose(g_shift, g_lax, rtol=1e-5, atol=1e-5 * float(np.abs(g_lax).max()))
    with pytest.raises(ValueError, match="depthwise_impl must be one of"):
        depthwise_conv2d(x, kernel, "fft")


def test_model_depthwise_switch_same_output(random_network):
    model, variables = random_network
    images = jax.random.uniform(jax.random.key(9), (1, 64, 96, 3))
    out_lax, _ = jax.jit(LMSFA(num_classes=4, depthwise_impl="lax").apply)(variables, images)
    out_shift, _ = jax.jit(LMSFA(num_classes=4, depthwise_impl="shift").apply)(variables, images)
    assert_close(out_shift[..., 4:], out_lax[..., 4:], rtol=1e-5, what="lax vs shift")
