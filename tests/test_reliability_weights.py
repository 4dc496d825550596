"""Issue 10, category 2: weight files are data, never code.

No loader in the package can run code from a file (checked on the source, so it holds where
PyTorch is not installed, as in CI); a damaged `.npz` or an unreadable `.pt` gets one line naming
the file. The last three tests run torch's restricted loader itself and need PyTorch.
"""
import ast
import pathlib
import sys
import zipfile

import numpy as np
import pytest

from lmsfa_jax.errors import InputError
from lmsfa_jax.weights import load_state_dict_file

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lmsfa_jax"
UNPICKLERS = ("pickle", "dill", "cloudpickle", "marshal", "shelve")


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can unpickle or run code from a file: torch.load without weights_only=True,
    pickle/dill/marshal/shelve loads, numpy loads with allow_pickle=True, yaml.load/unsafe_load."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        module, attr = node.func.value.id, node.func.attr
        where = f"line {node.lineno}: {module}.{attr}"
        if module == "torch" and attr == "load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where} without weights_only=True")
        elif module in UNPICKLERS and attr in ("load", "loads", "open"):
            found.append(where)
        elif module in ("np", "numpy") and attr == "load":
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where} with allow_pickle")
        elif module == "yaml" and attr in ("load", "unsafe_load", "full_load"):
            found.append(where)
    return found


def test_no_loader_in_the_package_can_run_code_from_a_file():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent)
        problems += [f"{name} {p}" for p in _unsafe_loads(ast.parse(path.read_text()))]
    assert not problems, "loaders that can run code from a user's file:\n" + "\n".join(problems)


def test_the_source_check_finds_what_it_looks_for():
    code = ("torch.load(p, weights_only=False)\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
            "pickle.loads(b)\nnp.load(p, allow_pickle=True)\nnp.load(p, allow_pickle=False)\nyaml.load(f)\n")
    found = [p.split(":")[0] for p in _unsafe_loads(ast.parse(code))]
    assert found == ["line 1", "line 2", "line 4", "line 5", "line 7"]


def test_random_bytes_npz_is_named_without_numpy_pickle_hint(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(InputError) as error:
        load_state_dict_file(path)
    message = str(error.value)
    assert str(path) in message and "not an .npz file" in message and "\n" not in message
    assert "pickle" not in message


def test_npz_with_object_array_or_damaged_member_is_refused(tmp_path):
    objects = tmp_path / "objects.npz"
    with zipfile.ZipFile(objects, "w") as archive:  # as numpy.savez writes an object array
        with archive.open("w.npy", "w") as member:
            np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="holds pickled Python objects, which are never loaded"):
        load_state_dict_file(objects)

    good = tmp_path / "good.npz"
    np.savez(good, **{"model.0.conv.weight": np.ones((4, 3, 3, 3), np.float32)})
    assert load_state_dict_file(good)["model.0.conv.weight"].shape == (4, 3, 3, 3)
    damaged = tmp_path / "damaged.npz"
    data = bytearray(good.read_bytes())
    data[60:200] = bytes(140)  # the array's bytes, inside an intact zip directory
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"{damaged}: damaged .npz"):
        load_state_dict_file(damaged)


def test_pt_without_pytorch_is_one_line_suggesting_npz(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"PK\x03\x04 not really")
    monkeypatch.setitem(sys.modules, "torch", None)  # as where PyTorch is not installed: import fails
    with pytest.raises(InputError, match=r"needs PyTorch .* \.npz") as error:
        load_state_dict_file(path)
    assert str(path) in str(error.value)


def test_pt_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"model.0.conv.weight": torch.zeros(2), "payload": RunsCode()}, path)
    with pytest.raises(InputError) as error:
        load_state_dict_file(path)
    message = str(error.value)
    assert not marker.exists()
    assert str(path) in message and "can run any code" in message and ".npz" in message
    assert "\n" not in message


def test_pickled_module_is_refused_with_how_to_convert(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "last.pt"
    torch.save({"model": torch.nn.Conv2d(3, 4, 3), "epoch": 3}, path)  # as Ultralytics saves a model
    with pytest.raises(InputError, match=r"needs torch\.nn\.modules\.conv\.Conv2d.*np\.savez\('.*last\.npz'"):
        load_state_dict_file(path)


def test_plain_and_nested_state_dicts_load(tmp_path):
    torch = pytest.importorskip("torch")
    weights = {"model.0.conv.weight": torch.ones(4, 3, 3, 3, dtype=torch.float16),
               "model.0.bn.num_batches_tracked": torch.tensor(5)}
    torch.save(weights, tmp_path / "plain.pt")
    torch.save({"model": weights, "epoch": 3}, tmp_path / "nested.pt")
    for name in ("plain.pt", "nested.pt"):
        loaded = load_state_dict_file(tmp_path / name)
        weight = loaded["model.0.conv.weight"]
        assert weight.dtype == np.float32 and weight.sum() == 108
        assert loaded["model.0.bn.num_batches_tracked"] == 5
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(InputError, match="random.pt: not a readable PyTorch file"):
        load_state_dict_file(tmp_path / "random.pt")
