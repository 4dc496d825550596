"""Trains LMSF-A: `python train.py --config configs/synthetic.py --workdir runs/synthetic`.

The same command as `python -m lmsfa_jax.train` and `lmsfa-train`; `--help` lists the flags.
"""
from lmsfa_jax.train import cli_main, main  # noqa: F401  (main: for `import train`)

if __name__ == "__main__":
    cli_main()
