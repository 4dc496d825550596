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


@pytest.fixture(scope="session")
def golden_dir():
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN_DIR} (expected ../shared/golden beside the checkout)")
    return GOLDEN_DIR
