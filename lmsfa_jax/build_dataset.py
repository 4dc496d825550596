"""Builds a YOLO-seg or COCO folder/archive into TFDS under a chosen name (no TensorFlow needed).

    python -m lmsfa_jax.build_dataset --source DIR_OR_ARCHIVE --name my_teeth
        [--data_dir ~/tensorflow_datasets] [--class_names a,b,c] [--overwrite]

Also `lmsfa-build-dataset`. The name `peld` uses the registered PELD builder. Class names come from
the source's data YAML `names` (or COCO categories) unless --class_names is given. Prints a summary
of every skipped or repaired file/line. Then train with --config.data.name=NAME
--config.data.data_dir=DATA_DIR --config.model.num_classes=N.
"""
import logging

from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.data import build


def define_flags(flag_values):
    flags.DEFINE_string("source", None, "dataset folder or .zip/.tar(.gz) archive", flag_values=flag_values)
    flags.DEFINE_string("name", None, "TFDS name to build (lower_case_with_underscores)", flag_values=flag_values)
    flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data directory", flag_values=flag_values)
    flags.DEFINE_list("class_names", None, "comma-separated class names (source ids are matched to them "
                      "by name)", flag_values=flag_values)
    flags.DEFINE_boolean("overwrite", False, "rebuild a dataset that exists (e.g. from a changed source)",
                         flag_values=flag_values)


def main(argv=None):
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    if not args.source or not args.name:
        raise cli.UsageError("--source and --name are required")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    built, report = build.build_dataset(args.source, args.name, args.data_dir, args.class_names,
                                        overwrite=args.overwrite)
    print(f"{args.name} in {built.data_dir}")
    print(report.summary())   # says whether it was reused, and the stored class names
    return built, report


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
