"""Writes the endoscopy-like synthetic dataset (YOLO-seg or COCO layout) into a folder.

    python -m lmsfa_jax.make_synthetic --out DIR [--train 64] [--val 16] [--test 0] [--size 320]
        [--seed 0] [--format yolo|coco]

Also `lmsfa-make-synthetic`. Deterministic per seed; build it with `python -m lmsfa_jax.build_dataset`.
"""
from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.data import synthetic


def define_flags(flag_values):
    flags.DEFINE_string("out", None, "output folder", flag_values=flag_values)
    flags.DEFINE_integer("train", 64, "training images", lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer("val", 16, "validation images", lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer("test", 0, "test images", lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer("size", 320, "image side in pixels", lower_bound=32, flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "random seed", flag_values=flag_values)
    flags.DEFINE_enum("format", "yolo", ["yolo", "coco"], "on-disk layout", flag_values=flag_values)


def main(argv=None):
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    if not args.out:
        raise cli.UsageError("--out is required")
    out = synthetic.write_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test},
                                  args.size, args.seed, args.format)
    print(f"wrote synthetic {args.format} dataset to {out}")
    return out


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
