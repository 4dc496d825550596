"""Builds a YOLO-seg or COCO folder/archive into TFDS under a chosen name (no TensorFlow needed).

    python -m lmsfa_jax.data.build --source DIR_OR_ZIP --name my_teeth --data_dir ~/tensorflow_datasets

Class names come from the source's data YAML `names` (or COCO categories) unless --class_names is
given. Prints a summary of every skipped or repaired file/line. Then set config.data.name = NAME and
config.data.data_dir = DATA_DIR (and config.model.num_classes = number of classes).
"""

import argparse
import logging

from lmsfa_jax.data import builder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="dataset folder or .zip/.tar(.gz) archive")
    parser.add_argument("--name", required=True, help="TFDS name to build (lower_case_with_underscores)")
    parser.add_argument("--data_dir", default="~/tensorflow_datasets", help="TFDS data directory")
    parser.add_argument(
        "--class_names",
        default=None,
        help="comma-separated class names (source ids are matched to them by name)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    names = args.class_names.split(",") if args.class_names else None
    built, report = builder.build_dataset(args.source, args.name, args.data_dir, names)
    print(f"built {args.name} into {built.data_dir}")
    print(f"classes: {built.info.features['objects']['label'].names}")
    print(report.summary())


if __name__ == "__main__":
    main()
