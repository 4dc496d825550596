"""Evaluates a trained LMSF-A model on a dataset split: COCO bbox/segm and Ultralytics-style metrics.

    python evaluate.py --workdir runs/peld [--config FILE] [--checkpoint best|latest|STEP|PATH]
                       [--split val|test] [--save_vis N] [--random_init] [--config.eval.batch_size=B]

Also `python -m lmsfa_jax.evaluate` and `lmsfa-evaluate`. The config defaults to the run's
WORKDIR/config.json. Writes into WORKDIR/eval_{split}/: predictions.json (COCO results, RLE masks
at original resolution), metrics.json, pr_bbox.png, pr_segm.png and, with --save_vis N, N overlay
images. Prints the per-class table and the speed in ms per image.

Several processes share the work with the multi-process flags (as `train`; `lmsfa_jax.distributed`):
each predicts part of the split, the metrics are those of the whole split, and process 0 writes
the outputs (its overlays are of the first images, its share).
"""
import json
import pathlib

from absl import flags

from lmsfa_jax import cli
from lmsfa_jax import distributed
from lmsfa_jax.data import reader as reader_lib
from lmsfa_jax.data import synthetic
from lmsfa_jax.evaluation import coco, evaluator, plots, postprocess


def define_flags(flag_values):
    flags.DEFINE_string("checkpoint", "best", "best, latest, a step number or a checkpoint path",
                        flag_values=flag_values)
    flags.DEFINE_string("split", "val", "dataset split", flag_values=flag_values)
    flags.DEFINE_integer("save_vis", 0, "save N overlay images", flag_values=flag_values)
    flags.DEFINE_float("vis_conf", postprocess.DISPLAY_CONF_THRESHOLD,
                       "overlays show detections scoring at least this (metrics use config.eval)",
                       flag_values=flag_values)
    flags.DEFINE_boolean("random_init", False, "a randomly initialised model (smoke test)",
                         flag_values=flag_values)


def main(argv=None) -> evaluator.EvalReport:
    args = cli.parse(argv, __doc__, define_flags, config=cli.RUN_CONFIG, distributed=True,
                     aliases={"batch_size": "config.eval.batch_size"})
    config, workdir = args.config, pathlib.Path(args.workdir).expanduser()
    distributed.main_first("synthetic data", lambda: synthetic.prepare_data_config(config, workdir))
    reader = reader_lib.open_split(config.data.name, config.data.data_dir, args.split)
    model, variables = cli.load_model(config, workdir, args.checkpoint, args.random_init)
    out = workdir / f"eval_{args.split}"
    if distributed.is_main():
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
        evaluator.eval_apply_fn(model), variables, reader, image_size=config.data.image_size,
        batch_size=config.eval.batch_size, on_image=save_overlay if distributed.is_main() else None,
        **evaluator.postprocess_settings(config))
    if not distributed.is_main():
        return report
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


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
