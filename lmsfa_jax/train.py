"""Trains LMSF-A (or resumes the run in --workdir from its latest checkpoint).

    python train.py --config configs/synthetic.py --workdir runs/synthetic
    python train.py --config configs/peld.py --workdir runs/peld --config.epochs=50

Also `python -m lmsfa_jax.train` and `lmsfa-train`. Any config field can be overridden as
--config.<field>=<value> (lmsfa_jax/training/config.py lists them).
"""
from lmsfa_jax import cli
from lmsfa_jax.training.loop import train_and_evaluate


def main(argv=None) -> dict:
    args = cli.parse(argv, __doc__, config=cli.CONFIG_REQUIRED)
    return train_and_evaluate(args.config, args.workdir)


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
