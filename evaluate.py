"""Evaluates a trained LMSF-A model on a dataset split (COCO bbox/segm + Ultralytics-style metrics).

    python evaluate.py --workdir runs/peld [--config configs/peld.py] [--checkpoint best|latest|PATH]
                       [--split val|test] [--save-vis N] [--random-init]

The config defaults to the run's saved WORKDIR/config.json.

Writes into WORKDIR/eval_{split}/: predictions.json (COCO results, RLE masks at original
resolution), metrics.json, pr_bbox.png, pr_segm.png and, with --save-vis N, N overlay images.
Prints the per-class table and the speed in ms per image.
"""
import argparse
import json
import pathlib
import sys

from lmsfa_jax.data import reader as reader_lib
from lmsfa_jax.data import synthetic
from lmsfa_jax.evaluation import coco, evaluator, plots


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="config file (.py with get_config(), or .json); default WORKDIR/config.json")
    parser.add_argument("--workdir", required=True, help="training run directory")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a checkpoint path")
    parser.add_argument("--split", default="val")
    parser.add_argument("--save-vis", type=int, default=0, help="save N overlay images")
    parser.add_argument("--vis-conf", type=float, default=0.25,
                        help="draw detections scoring at least this in the overlays (metrics use 0.001)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: config.batch_size")
    parser.add_argument("--random-init", action="store_true", help="randomly initialised model (smoke test)")
    args = parser.parse_args(argv)

    workdir = pathlib.Path(args.workdir)
    try:
        config = evaluator.load_config(args.config or workdir / "config.json")
        synthetic.prepare_data_config(config, workdir)
        reader = reader_lib.open_split(config.data.name, config.data.data_dir, args.split)
        apply_fn, variables = evaluator.build_model_and_variables(
            config, workdir, args.checkpoint, random_init=args.random_init, seed=config.get("seed", 0))
    except FileNotFoundError as e:  # missing config, dataset not built, no checkpoint
        sys.exit(f"error: {e}")
    out = workdir / f"eval_{args.split}"
    out.mkdir(parents=True, exist_ok=True)

    saved = []

    def save_overlay(example, instances):
        if len(saved) < args.save_vis:
            keep = instances["scores"] >= args.vis_conf
            image = plots.draw_instances(example["image"], instances["boxes"][keep], instances["classes"][keep],
                                         instances["scores"][keep], instances["masks"][keep], reader.class_names)
            name = pathlib.Path(str(example["file_name"])).stem
            saved.append(plots.save_rgb(image, out / f"vis_{len(saved):03d}_{name}.png"))

    report = evaluator.evaluate_split(
        apply_fn, variables, reader, image_size=config.data.image_size,
        batch_size=args.batch_size or config.batch_size, on_image=save_overlay)
    (out / "predictions.json").write_text(json.dumps(report.results))
    (out / "metrics.json").write_text(json.dumps(report.metrics, indent=2))
    for iou_type, title in (("bbox", "Box"), ("segm", "Mask")):
        plots.plot_pr_curves(report.curves[iou_type], reader.class_names, out / f"pr_{iou_type}.png",
                             title=f"{title} precision-recall (IoU 0.5)")
    print(coco.format_table(report.metrics))
    speed = report.metrics["speed_ms_per_image"]
    print("Speed: " + ", ".join(f"{v:.1f} ms {k}" for k, v in speed.items()) + " per image")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
