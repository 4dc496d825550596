"""The Flax model reproduces the PyTorch reference's golden tensors (../shared/golden)."""
import jax
import numpy as np
import pytest

from lmsfa_jax.model import LMSFA

LAYERS = ("layer2", "layer9", "layer12", "layer24", "layer25")
RTOL = 1e-4
BOX_ATOL_PX = 1e-2


def relative_error(actual, expected):
    """max |a − e| / max |e|: the error relative to the tensor's scale."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def nchw(x):
    x = np.asarray(x)
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x.transpose(0, 2, 1)


@pytest.fixture(scope="module")
def outputs(golden_variables, golden_input):
    model = LMSFA(num_classes=4, scale="n")
    capture = lambda m, name: len(m.path) == 1 and m.path[0] in {f"model_{n[5:]}" for n in LAYERS}
    (decoded, protos), state = jax.jit(
        lambda v, x: model.apply(v, x, capture_intermediates=capture, mutable=["intermediates"])
    )(golden_variables, golden_input)
    (maps, mask_coef, _), _ = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(golden_variables, golden_input)
    # Raw maps under running statistics (eval mode) are what the golden file recorded.
    eval_maps = jax.jit(lambda v, x: model.apply(v, x, decode=False))(golden_variables, golden_input)
    out = {name: nchw(state["intermediates"][f"model_{name[5:]}"]["__call__"][0]) for name in LAYERS}
    out.update(out_p3=nchw(eval_maps[0][0]), out_p4=nchw(eval_maps[0][1]), out_p5=nchw(eval_maps[0][2]),
               mask_coef=nchw(eval_maps[1]), protos=nchw(protos), decoded=nchw(decoded))
    out["_train_shapes"] = ([m.shape for m in maps], mask_coef.shape)
    return out


@pytest.mark.parametrize("name", LAYERS + ("out_p3", "out_p4", "out_p5", "mask_coef", "protos"))
def test_tensor_matches_golden(outputs, golden, name):
    err = relative_error(outputs[name], golden[name])
    assert outputs[name].shape == golden[name].shape
    assert err <= RTOL, f"{name}: worst relative error {err:.3g} > {RTOL}"


def test_decoded_matches_golden(outputs, golden):
    actual, expected = outputs["decoded"], golden["decoded"]
    assert actual.shape == expected.shape == (1, 40, 1344)
    box_err = float(np.abs(actual[:, :4] - expected[:, :4]).max())
    cls_err = relative_error(actual[:, 4:8], expected[:, 4:8])
    coef_err = relative_error(actual[:, 8:], expected[:, 8:])
    assert box_err <= BOX_ATOL_PX, f"boxes: worst absolute error {box_err:.3g} px > {BOX_ATOL_PX}"
    assert cls_err <= RTOL, f"class probabilities: worst relative error {cls_err:.3g}"
    assert coef_err <= RTOL, f"mask coefficients: worst relative error {coef_err:.3g}"


def test_train_mode_shapes_on_golden_input(outputs):
    map_shapes, coef_shape = outputs["_train_shapes"]
    assert map_shapes == [(1, 32, 32, 68), (1, 16, 16, 68), (1, 8, 8, 68)]
    assert coef_shape == (1, 1344, 32)
