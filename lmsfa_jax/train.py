"""Trains LMSF-A (or resumes the run in --workdir from its latest checkpoint).

    python train.py --config configs/synthetic.py --workdir runs/synthetic
    python train.py --config configs/peld.py --workdir runs/peld --config.epochs=50

Also `python -m lmsfa_jax.train` and `lmsfa-train`. Any config field can be overridden as
--config.<field>=<value> (lmsfa_jax/training/config.py lists them). Several processes (hosts) train
one model with the multi-process flags, e.g. two on this machine:

    python train.py ... --coordinator_address 127.0.0.1:12345 --num_processes 2 --process_id 0
    python train.py ... --coordinator_address 127.0.0.1:12345 --num_processes 2 --process_id 1
"""
from lmsfa_jax import cli
from lmsfa_jax.training.loop import train_and_evaluate


def main(argv=None) -> dict:
    args = cli.parse(argv, __doc__, config=cli.CONFIG_REQUIRED, distributed=True)
    return train_and_evaluate(args.config, args.workdir)


cli_main = cli.entry_point(main, huge_pages=True)

if __name__ == "__main__":
    cli_main()
