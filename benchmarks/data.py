"""Throughput of the full augmenting input pipeline (mosaic, affine, HSV, flip, masks) at 640 x 640.

    python benchmarks/data.py [--workdir /tmp/lmsfa_bench] [--images 64] [--batch_size 16] [--epochs 2]

Builds the synthetic dataset once (640 px images), then for 1 and 2 worker processes times
`--epochs` epochs after one warm-up epoch (which starts the workers and fills the RAM cache) and
prints images/s.
"""

import argparse
import time

from lmsfa_jax.data import pipeline
from lmsfa_jax.data import synthetic


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/lmsfa_bench")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    name, data_dir = synthetic.ensure_synthetic_dataset(args.workdir, args.images, 0, args.size, seed=0)
    config = pipeline.default_data_config()
    config.update(name=name, data_dir=data_dir, image_size=args.size, cache_ram=True)
    for workers in args.workers:
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
    main()
