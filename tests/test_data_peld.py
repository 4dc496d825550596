"""Runs the PELD builder's own test (it lives beside the builder, in the `tfds new` layout)."""

from lmsfa_jax.data.peld.peld_dataset_builder_test import (
    test_peld_builds_from_manual_dir_and_reads_back,
)  # noqa: F401
