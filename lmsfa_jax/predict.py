"""Instance segmentation of images, a folder or a video with a trained LMSF-A model (batch 1).

    python -m lmsfa_jax.predict --workdir runs/peld --source PATH [--config FILE]
        [--checkpoint best|latest|STEP|PATH] [--conf 0.25] [--out DIR] [--random_init]
        [--config.eval.iou_threshold=0.7] [--config.eval.max_det=300]
        [--backend jax|onnxruntime|stablehlo --model FILE]

Also `lmsfa-predict`. The config defaults to the run's WORKDIR/config.json. `--backend jax` (the
default) runs the run's checkpoint; `onnxruntime` and `stablehlo` run an exported --model FILE
(`python -m lmsfa_jax.export`) through the same letterbox and post-processing, whose image size
and class count must match the config (an --end_to_end export brings its own post-processing
settings; --conf must then equal its threshold or be left out). Writes to --out
(default WORKDIR/predict): an overlay PNG per image (or an annotated .mp4 for a video) and
instances.json: one entry per image / frame with its instances (class, class_id, score, box xyxy in
original pixels, mask as COCO RLE). Prints batch-1 latency and FPS. Files of a folder that cannot
be read or decoded are skipped with a warning and listed at the end; the rest are predicted.
"""
import json
import pathlib
import sys
import time

import cv2
import jax
import numpy as np
from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.data import reader
from lmsfa_jax.errors import InputError
from lmsfa_jax.evaluation import coco, evaluator, plots, postprocess
from lmsfa_jax.export import metadata as export_metadata
from lmsfa_jax.export import runtime

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg"}


def iter_frames(source, skipped: list | None = None):
    """(name, frame index, RGB uint8 image) for an image file, a folder of images or a video.

    A folder's image that cannot be read or decoded is skipped with a warning on stderr and
    (path, why) appended to `skipped`; a single image or a video that cannot be read is an InputError.
    """
    source = pathlib.Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise InputError(f"cannot open video {source}")
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield source.name, index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        capture.release()
        return
    elif source.is_file():
        files = [source]
    else:
        raise FileNotFoundError(f"source not found: {source}")
    for path in files:
        try:
            image = reader.decode_image(path.read_bytes())
        except (OSError, ValueError) as error:
            why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            if not source.is_dir():
                raise InputError(f"cannot read image {path}: {why}") from None
            print(f"warning: skipped {path}: {why}", file=sys.stderr)
            if skipped is not None:
                skipped.append((path, why))
            continue
        yield path.name, 0, image


def instances_to_json(instances, class_names):
    """Original-pixel instances -> list of {class, class_id, score, box, rle} dicts."""
    rles = coco.encode_masks(instances["masks"])
    return [{"class": class_names[int(c)], "class_id": int(c), "score": round(float(s), 5),
             "box": [round(float(v), 2) for v in b], "rle": rle}
            for b, s, c, rle in zip(instances["boxes"], instances["scores"], instances["classes"], rles)]


def jax_detector(apply_fn, variables, **postprocess_kwargs):
    """images (B, S, S, 3) -> host `postprocess.Detections` of the JAX model."""
    infer, post = evaluator.make_predictor(apply_fn, **postprocess_kwargs)
    return lambda images: jax.device_get(post(*infer(variables, images)))


def predict(detect, frames, class_names, image_size, out, *, video_fps=None):
    """Runs batch-1 prediction with `detect` (images -> host Detections) over `frames` ->
    (records, latencies in ms). Writes overlays (or out/'{video}.mp4' when video_fps is given) and
    returns the instances.json records."""
    records, latencies, writer = [], [], None
    for number, (name, index, image) in enumerate(frames):
        start = time.perf_counter()
        prepared = evaluator.prepare_image(image, image_size)
        if number == 0:  # compile outside the timings
            detect(prepared.image[None])
            start = time.perf_counter()
            prepared = evaluator.prepare_image(image, image_size)
        detections = detect(prepared.image[None])
        instances = evaluator.detections_to_original(detections, 0, prepared, image_size)
        latencies.append(1000 * (time.perf_counter() - start))
        records.append({"source": name, "frame": index, "height": image.shape[0], "width": image.shape[1],
                        "instances": instances_to_json(instances, class_names)})
        overlay = plots.draw_instances(image, instances["boxes"], instances["classes"],
                                       instances["scores"], instances["masks"], class_names)
        if video_fps is None:
            plots.save_rgb(overlay, out / f"{pathlib.Path(name).stem}_pred.png")
            continue
        if writer is None:
            writer = cv2.VideoWriter(str(out / f"{pathlib.Path(name).stem}_pred.mp4"),
                                     cv2.VideoWriter_fourcc(*"mp4v"), video_fps,
                                     (image.shape[1], image.shape[0]))
        writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    return records, latencies


def class_names_of(config) -> list[str]:
    """The run's class names: config.data.class_names (saved by training), else the dataset's, else
    generic `class<k>` names."""
    if config.data.class_names:
        return list(config.data.class_names)
    try:
        return reader.class_names(config.data.name, config.data.data_dir)
    except FileNotFoundError:
        return [f"class{k}" for k in range(config.model.num_classes)]


def define_flags(flag_values):
    flags.DEFINE_string("source", None, "image, folder of images or video file", flag_values=flag_values)
    flags.DEFINE_string("checkpoint", "best", "best, latest, a step number or a checkpoint path",
                        flag_values=flag_values)
    flags.DEFINE_float("conf", postprocess.DISPLAY_CONF_THRESHOLD, "confidence threshold",
                       flag_values=flag_values)
    flags.DEFINE_string("out", None, "output folder (default: WORKDIR/predict)", flag_values=flag_values)
    flags.DEFINE_boolean("random_init", False, "a randomly initialised model (smoke test)",
                         flag_values=flag_values)
    flags.DEFINE_enum("backend", "jax", ["jax", *runtime.BACKENDS], "jax: the run's checkpoint; "
                      "onnxruntime / stablehlo: an exported --model FILE", flag_values=flag_values)
    flags.DEFINE_string("model", None, "exported model file (with --backend onnxruntime or stablehlo)",
                        flag_values=flag_values)


def make_detector(args, config, workdir):
    """images -> host Detections for the chosen --backend, with the run's post-processing settings."""
    settings = dict(conf_threshold=args.conf, iou_threshold=config.eval.iou_threshold,
                    max_det=config.eval.max_det)
    if args.backend == "jax":
        if args.model:
            raise cli.UsageError("--model needs --backend onnxruntime or stablehlo")
        model, variables = cli.load_model(config, workdir, args.checkpoint, args.random_init)
        return jax_detector(evaluator.eval_apply_fn(model), variables, **settings)
    if not args.model:
        raise cli.UsageError(f"--backend {args.backend} needs --model FILE (an export of this run)")
    exported = runtime.load(args.model, args.backend)
    export_metadata.check_for_predict(exported.metadata, config, args.model)
    baked = exported.metadata["postprocess"]
    if baked is not None:
        if args["conf"].present and args.conf != baked["conf_threshold"]:
            raise cli.UsageError(f"--conf {args.conf}: {args.model} has its confidence threshold "
                                 f"{baked['conf_threshold']} built in (export it again with --conf {args.conf})")
        print(f"post-processing inside {args.model}: " + ", ".join(f"{k} {v}" for k, v in baked.items()))
    return runtime.detector(exported, **settings)


def main(argv=None) -> list:
    args = cli.parse(argv, __doc__, define_flags, config=cli.RUN_CONFIG,
                     aliases={"iou": "config.eval.iou_threshold", "max_det": "config.eval.max_det"})
    if not args.source:
        raise cli.UsageError("--source is required")
    config, workdir, source = args.config, pathlib.Path(args.workdir).expanduser(), pathlib.Path(args.source)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    detect = make_detector(args, config, workdir)
    out = pathlib.Path(args.out) if args.out else workdir / "predict"
    out.mkdir(parents=True, exist_ok=True)
    video_fps = None
    if source.suffix.lower() in VIDEO_SUFFIXES:
        video_fps = cv2.VideoCapture(str(source)).get(cv2.CAP_PROP_FPS) or 25.0
    skipped = []
    records, latencies = predict(detect, iter_frames(source, skipped), class_names_of(config),
                                 config.data.image_size, out, video_fps=video_fps)
    unreadable = f"{len(skipped)} unreadable file(s) skipped: " + ", ".join(p.name for p, _ in skipped)
    if not records:
        raise InputError(f"no image or frame of {source} could be read"
                         + (f"; {unreadable}" if skipped else ""))
    (out / "instances.json").write_text(json.dumps(records))
    mean_ms = float(np.mean(latencies))
    print(f"{len(records)} image(s), {sum(len(r['instances']) for r in records)} instances; "
          f"batch-1 latency {mean_ms:.1f} ms ({1000 / mean_ms:.1f} FPS, pre/post-processing included); "
          f"wrote {out}")
    if skipped:
        print(unreadable, file=sys.stderr)
    return records


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
