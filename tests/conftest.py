"""Shared test setup: persistent XLA compilation cache inside the checkout, golden-file paths."""
import os
import pathlib

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT.parent / "shared" / "golden"

jax.config.update(
    "jax_compilation_cache_dir", os.environ.get("LMSFA_JAX_CACHE_DIR", str(ROOT / ".jax_cache"))
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# The costliest test files (each compiles a train step; together half the suite's time), run first,
# in this order, so that the two xdist workers (`-n 2 --dist loadfile`) finish together: left to
# the end, they kept one worker busy for 70 s or more after the other. The order also lets files that
# share a compiled step (through the persistent cache) load it rather than compile it side by side:
# test_train_devices' two-device step is test_multihost_training's, and
# test_reliability_train_nonfinite's is test_train_loop's (last, to start once that has compiled it).
COSTLIEST_FIRST = ("test_multihost_training.py", "test_benchmarks.py", "test_train_devices.py",
                   "test_train_loop.py", "test_train_overfit.py", "test_reliability_train_nonfinite.py")


def pytest_collection_modifyitems(items):
    """Runs the files of COSTLIEST_FIRST first, in its order; the others keep theirs."""
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def golden_dir():
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN_DIR} (expected ../shared/golden beside the checkout)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden(golden_dir):
    """The reference model's golden file: weights under PyTorch names plus recorded tensors."""
    import numpy as np

    with np.load(golden_dir / "lmsfa_n_nc4_golden.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def golden_state_dict(golden):
    return {k: v for k, v in golden.items() if k.startswith("model.")}


@pytest.fixture(scope="session")
def golden_variables(golden_state_dict):
    from lmsfa_jax.weights import from_torch_state_dict

    return from_torch_state_dict(golden_state_dict, num_classes=4, scale="n")


@pytest.fixture(scope="session")
def golden_input(golden):
    """The golden input as NHWC float32 (1, 256, 256, 3)."""
    return golden["input"].transpose(0, 2, 3, 1)
