"""Throughput of the full augmenting input pipeline (mosaic, affine, HSV, flip, masks) at 640 x 640.

    python benchmarks/data.py [--workdir /tmp/lmsfa_bench] [--images 64] [--batch_size 16] [--epochs 2]
        [--size 640] [--workers 1,2]

Builds the synthetic dataset once (640 px images), then for 1 and 2 worker processes times
`--epochs` epochs after one warm-up epoch (which starts the workers and fills the RAM cache) and
prints images/s.
"""

import time

from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.data import pipeline
from lmsfa_jax.data import synthetic


def define_flags(flag_values):
    flags.DEFINE_string("workdir", "/tmp/lmsfa_bench", "where the synthetic dataset is built", flag_values=flag_values)
    flags.DEFINE_integer("images", 64, "synthetic training images", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 16, "batch size", flag_values=flag_values)
    flags.DEFINE_integer("epochs", 2, "timed epochs after one warm-up epoch", flag_values=flag_values)
    flags.DEFINE_integer("size", 640, "image size", flag_values=flag_values)
    flags.DEFINE_list("workers", ["1", "2"], "worker-process counts to time", flag_values=flag_values)


def main(argv=None):
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    name, data_dir = synthetic.ensure_synthetic_dataset(args.workdir, args.images, 0, args.size, seed=0)
    config = pipeline.default_data_config()
    config.update(name=name, data_dir=data_dir, image_size=args.size, cache_ram=True)
    for workers in map(int, args.workers):
        with pipeline.InputPipeline(
            config, "train", args.batch_size, train=True, seed=0, num_workers=workers
        ) as pipe:
            for _ in pipe.epoch(0):  # warm-up: worker start, decoding into the RAM cache
                pass
            start = time.perf_counter()
            count = sum(
                batch["images"].shape[0] for epoch in range(1, 1 + args.epochs) for batch in pipe.epoch(epoch)
            )
            elapsed = time.perf_counter() - start
        print(
            f"{workers} worker(s): {count / elapsed:.1f} images/s at {args.size}x{args.size} "
            f"(batch {args.batch_size}, mosaic on, {count} images in {elapsed:.2f} s)"
        )


if __name__ == "__main__":
    cli.run(main)
