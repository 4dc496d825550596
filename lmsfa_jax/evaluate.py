"""Evaluates a trained LMSF-A model, or any model's predictions, on a dataset split: COCO bbox/segm
and Ultralytics-style metrics.

    python evaluate.py --workdir runs/peld [--config FILE] [--checkpoint best|latest|STEP|PATH]
                       [--split val|test] [--save_vis N] [--random_init] [--config.eval.batch_size=B]
                       [--predictions FILE.json|LABELS_DIR [--match_by auto|image_id|file_stem]]
                       [--write_gt FILE.json] [--mask_resolution full|quarter] [--out DIR]

Also `python -m lmsfa_jax.evaluate` and `lmsfa-evaluate`. The config defaults to the run's
WORKDIR/config.json. Writes into --out (default WORKDIR/eval_{split}, or WORKDIR/eval_{split}_predictions
with --predictions): metrics.json, pr_bbox.png, pr_segm.png, with --save_vis N, N overlay images and,
for our model, predictions.json (COCO results, RLE masks at original resolution). Prints the
per-class table and, for our model, the speed in ms per image. With the multi-process flags (as
`train`) the processes share the predicting (`lmsfa_jax.distributed`); process 0 writes the outputs.

--predictions scores another model's predictions instead of ours (no checkpoint needed): a COCO
results JSON file (`yolo val save_json=True` writes one) or the folder of Ultralytics text files
that `yolo predict save_txt=True save_conf=True` writes (lmsfa_jax/evaluation/external.py has the
formats). --write_gt writes the split's ground truth, exactly as scored, as a COCO instances file
(alone, without --predictions or a checkpoint, it only writes that file). --mask_resolution quarter
also scores masks on a grid of 1/4 of the network input (config.data.image_size), as Ultralytics'
validator does, and prints both resolutions side by side.
"""
import json
import pathlib

from absl import flags
from tqdm import tqdm

from lmsfa_jax import cli
from lmsfa_jax import distributed
from lmsfa_jax.data import reader as reader_lib
from lmsfa_jax.data import synthetic
from lmsfa_jax.evaluation import coco, evaluator, external, mask_resolution, plots, postprocess


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
    flags.DEFINE_string("predictions", None, "score these predictions instead of the model: a COCO results "
                        ".json file or a folder of Ultralytics save_txt files", flag_values=flag_values)
    flags.DEFINE_enum("match_by", "auto", external.MATCH_BY, "how --predictions JSON names images: "
                      "image_id (the split's ids), file_stem (file names, also numeric image_ids) or auto",
                      flag_values=flag_values)
    flags.DEFINE_string("write_gt", None, "write the split's ground truth as COCO instances JSON to this file",
                        flag_values=flag_values)
    flags.DEFINE_enum("mask_resolution", "full", mask_resolution.MASK_RESOLUTIONS,
                      "full: masks scored at the original resolution; quarter: also on a grid of 1/4 of "
                      "the network input (config.data.image_size), as Ultralytics' validator scores them",
                      flag_values=flag_values)
    flags.DEFINE_string("out", None, "output folder (default: WORKDIR/eval_SPLIT, with --predictions "
                        "WORKDIR/eval_SPLIT_predictions)", flag_values=flag_values)


def main(argv=None) -> evaluator.EvalReport | None:
    """Runs the command; -> its EvalReport (None when it only wrote the ground truth, and on the
    processes other than 0 of a multi-process run given --predictions)."""
    args = cli.parse(argv, __doc__, define_flags, config=cli.RUN_CONFIG, distributed=True,
                     aliases={"batch_size": "config.eval.batch_size"})
    config, workdir = args.config, pathlib.Path(args.workdir).expanduser()
    if args.predictions and (args.random_init or args["checkpoint"].present):
        raise cli.UsageError("--predictions scores given predictions: --checkpoint and --random_init do not apply")
    distributed.main_first("synthetic data", lambda: synthetic.prepare_data_config(config, workdir))
    main_process = distributed.is_main()  # writes the outputs; the others help predict
    if args.predictions and not main_process:
        return None
    reader = reader_lib.open_split(config.data.name, config.data.data_dir, args.split)
    default_out = f"eval_{args.split}_predictions" if args.predictions else f"eval_{args.split}"
    out = pathlib.Path(args.out).expanduser() if args.out else workdir / default_out
    save_overlay = overlay_saver(args.save_vis if main_process else 0, args.vis_conf, reader.class_names, out)
    ground_truth = split_ground_truth(reader) if args.write_gt or args.predictions else None
    if args.write_gt and main_process:
        write_json(ground_truth, args.write_gt)
        print(f"wrote the ground truth of {len(ground_truth['images'])} images, "
              f"{len(ground_truth['annotations'])} objects to {args.write_gt}")
    if args.predictions:
        report = score_predictions(args.predictions, args.match_by, ground_truth, reader, args.save_vis, save_overlay)
    else:
        try:
            model, variables = cli.load_model(config, workdir, args.checkpoint, args.random_init)
        except FileNotFoundError as e:
            if not args.write_gt:
                raise
            distributed.print_main(f"not evaluating a model: {e}")
            return None
        report = score_model(model, variables, reader, config, save_overlay)
        if not main_process:
            return report
        write_json(report.results, out / "predictions.json")
    if args.mask_resolution == "quarter":
        mask_resolution.add_quarter_metrics(report.metrics, report.curves, report.ground_truth, report.results,
                                            reader.class_names, config.data.image_size)
    write_report(report, reader.class_names, out)
    if args.mask_resolution == "quarter":
        print(f"Masks on the 1/4 grid of a {config.data.image_size}-pixel network input, as Ultralytics "
              "scores them, beside full resolution:")
        print(mask_resolution.format_comparison(report.metrics))
    print(f"wrote {out}")
    return report


def split_ground_truth(reader):
    """The COCO ground truth of a split, from its annotations (images are not decoded)."""
    examples = (reader_lib.decode_record(reader.record(i), decode_pixels=False)
                for i in tqdm(range(len(reader)), desc="ground truth", disable=len(reader) < 100))
    return coco.coco_ground_truth(examples, reader.class_names)


def write_json(data, path, indent=None):
    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent))


def overlay_saver(count, vis_conf, class_names, out):
    """on_image(example, instances) that saves the first `count` overlays of instances scoring at
    least vis_conf into `out`."""
    saved = []

    def save_overlay(example, instances):
        if len(saved) < count:
            out.mkdir(parents=True, exist_ok=True)
            keep = instances["scores"] >= vis_conf
            image = plots.draw_instances(example["image"], instances["boxes"][keep], instances["classes"][keep],
                                         instances["scores"][keep], instances["masks"][keep], class_names)
            name = pathlib.Path(str(example["file_name"])).stem
            saved.append(plots.save_rgb(image, out / f"vis_{len(saved):03d}_{name}.png"))

    return save_overlay


def score_model(model, variables, reader, config, save_overlay) -> evaluator.EvalReport:
    """Our model over the split -> EvalReport; save_overlay(example, instances) is called per image."""
    return evaluator.evaluate_split(
        evaluator.eval_apply_fn(model), variables, reader, image_size=config.data.image_size,
        batch_size=config.eval.batch_size, on_image=save_overlay, **evaluator.postprocess_settings(config))


def score_predictions(path, match_by, ground_truth, reader, save_vis, save_overlay) -> evaluator.EvalReport:
    """Predictions read from `path` -> EvalReport (metrics["predictions"] counts what was read), and
    save_overlay(example, instances) for the first save_vis images."""
    results, loaded = external.load(path, ground_truth, match_by)
    print(loaded.summary())
    metrics, curves = coco.evaluate(ground_truth, results, reader.class_names)
    metrics["predictions"] = loaded.as_dict()
    for index in range(min(save_vis, len(reader))):
        example = reader[index]
        mine = [r for r in results if r["image_id"] == example["image_id"]]
        save_overlay(example, coco.results_to_instances(mine, example["height"], example["width"]))
    return evaluator.EvalReport(metrics, curves, results, ground_truth)


def write_report(report, class_names, out):
    """metrics.json, a PR plot per curve set, and the per-class table (+ speed) on the terminal."""
    write_json(report.metrics, out / "metrics.json", indent=2)
    titles = {"bbox": "Box", "segm": "Mask", mask_resolution.QUARTER: "Mask (1/4-resolution grid)"}
    for kind, curves in report.curves.items():
        plots.plot_pr_curves(curves, class_names, out / f"pr_{kind}.png",
                             title=f"{titles[kind]} precision-recall (IoU 0.5)")
    print(coco.format_table(report.metrics))
    speed = report.metrics.get("speed_ms_per_image")
    if speed:
        print("Speed: " + ", ".join(f"{v:.1f} ms {k}" for k, v in speed.items()) + " per image")


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
