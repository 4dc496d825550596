"""Evaluates a trained run: `python evaluate.py --workdir runs/synthetic [--save_vis 4]`.

The same command as `python -m lmsfa_jax.evaluate` and `lmsfa-evaluate`; `--help` lists the flags.
"""
from lmsfa_jax.evaluate import cli_main, main  # noqa: F401  (main: for `import evaluate`)

if __name__ == "__main__":
    cli_main()
