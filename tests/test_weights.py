"""PyTorch state dict <-> Flax variables."""
import numpy as np
import pytest

from lmsfa_jax.model import LMSFA, init_variables
from lmsfa_jax.weights import from_torch_state_dict, load_matching_torch_weights, to_torch_state_dict


def test_round_trip_is_exact(golden_state_dict, golden_variables):
    back = to_torch_state_dict(golden_variables)
    assert set(back) == set(golden_state_dict)
    for name, value in golden_state_dict.items():
        assert back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_layouts(golden_state_dict, golden_variables):
    p = golden_variables["params"]
    torch_conv = golden_state_dict["model.0.conv.weight"]                     # (16, 3, 3, 3) OIHW
    np.testing.assert_array_equal(p["model_0"]["conv"]["kernel"], torch_conv.transpose(2, 3, 1, 0))
    torch_up = golden_state_dict["model.26.proto.upsample.weight"]            # (in, out, 2, 2)
    np.testing.assert_array_equal(p["model_26"]["proto"]["upsample"]["kernel"], torch_up.transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(golden_variables["batch_stats"]["model_24"]["bn"]["var"],
                                  golden_state_dict["model.24.bn.running_var"])


def test_mismatch_lists_every_bad_key(golden_state_dict):
    broken = dict(golden_state_dict)
    del broken["model.3.bn.running_mean"]
    broken["model.99.extra.weight"] = np.zeros(3, np.float32)
    broken["model.5.conv.weight"] = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(ValueError) as err:
        from_torch_state_dict(broken, num_classes=4)
    text = str(err.value)
    assert "model.3.bn.running_mean" in text and "missing" in text
    assert "model.99.extra.weight" in text and "unexpected" in text
    assert "model.5.conv.weight: state dict (1, 2, 3, 3) vs model (128, 64, 3, 3)" in text


def test_wrong_class_count_is_reported(golden_state_dict):
    with pytest.raises(ValueError, match=r"model\.26\.cv3\.weight: state dict \(4, 64, 1, 1\) vs model \(80, 64, 1, 1\)"):
        from_torch_state_dict(golden_state_dict, num_classes=80)


def test_partial_load_into_other_class_count(golden_state_dict):
    model = LMSFA(num_classes=2)
    variables = init_variables(model)
    loaded, report = load_matching_torch_weights(variables, golden_state_dict)
    assert sorted(s.split(":")[0] for s in report.mismatched) == ["model.26.cv3.bias", "model.26.cv3.weight"]
    assert not report.missing and not report.unexpected
    np.testing.assert_array_equal(loaded["params"]["model_26"]["cv3"]["kernel"],
                                  variables["params"]["model_26"]["cv3"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["model_0"]["conv"]["kernel"],
                                  golden_state_dict["model.0.conv.weight"].transpose(2, 3, 1, 0))
    assert "2 shape mismatch" in report.summary()
