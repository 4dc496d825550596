"""Train LMSF-A.

    python train.py --config configs/synthetic.py --workdir runs/synthetic
    python train.py --config configs/peld.py --workdir runs/peld --config.epochs=50

Any config field can be overridden as --config.<field>=<value>; re-running the same command
resumes from the latest checkpoint in the workdir.
"""
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lmsfa_jax.data.reader import DatasetNotBuiltError
from lmsfa_jax.training.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: metrics, checkpoints, plots.")
_CACHE = flags.DEFINE_string("compilation_cache", os.environ.get("LMSFA_JAX_CACHE_DIR", "~/.cache/lmsfa_jax/xla"),
                             "Persistent XLA compilation cache directory ('' disables it).")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
    """absl flag parsing, with a one-line error for an unknown --config.<field> override."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}\nPass --helpfull to see the flags.")
    except (AttributeError, KeyError) as e:  # ml_collections: no such config field
        while e.args and isinstance(e.args[0], Exception):
            e = e.args[0]
        sys.exit(f"error: unknown config override {e.args[0] if e.args else e}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS log every step at INFO
    if _CACHE.value:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE.value))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except DatasetNotBuiltError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
