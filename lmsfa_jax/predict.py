"""Instance segmentation of images, a folder or a video with a trained LMSF-A model (batch 1).

    python -m lmsfa_jax.predict --workdir runs/peld --source PATH [--config configs/peld.py]
        [--checkpoint best|latest|PATH] [--conf 0.25] [--iou 0.7] [--out DIR] [--random-init]

Writes to --out (default WORKDIR/predict): an overlay PNG per image (or an annotated .mp4 for a
video) and instances.json: one entry per image / frame with its instances (class, class_id,
score, box xyxy in original pixels, mask as COCO RLE). Prints batch-1 latency and FPS.
"""
import argparse
import json
import pathlib
import sys
import time

import cv2
import jax
import numpy as np

from lmsfa_jax.evaluation import coco, evaluator, plots

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg"}


def iter_frames(source):
    """(name, frame index, RGB uint8 image) for an image file, a folder of images or a video."""
    source = pathlib.Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise OSError(f"cannot open video {source}")
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
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot decode image {path}")
        yield path.name, 0, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def instances_to_json(instances, class_names):
    """Original-pixel instances -> list of {class, class_id, score, box, rle} dicts."""
    rles = coco.encode_masks(instances["masks"])
    return [{"class": class_names[int(c)], "class_id": int(c), "score": round(float(s), 5),
             "box": [round(float(v), 2) for v in b], "rle": rle}
            for b, s, c, rle in zip(instances["boxes"], instances["scores"], instances["classes"], rles)]


def predict(apply_fn, variables, frames, class_names, image_size, out, conf_threshold=0.25,
            iou_threshold=0.7, max_det=300, video_fps=None):
    """Runs batch-1 prediction over `frames` -> (records, latencies in ms). Writes overlays (or
    out/'{video}.mp4' when video_fps is given) and returns the instances.json records."""
    infer, post = evaluator.make_predictor(apply_fn, conf_threshold=conf_threshold,
                                           iou_threshold=iou_threshold, max_det=max_det)
    records, latencies, writer = [], [], None
    for number, (name, index, image) in enumerate(frames):
        start = time.perf_counter()
        prepared = evaluator.prepare_image(image, image_size)
        batch = prepared.image[None]
        if number == 0:  # compile outside the timings
            jax.block_until_ready(post(*infer(variables, batch)))
            start = time.perf_counter()
            prepared = evaluator.prepare_image(image, image_size)
        detections = jax.device_get(post(*infer(variables, prepared.image[None])))
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


def _class_names(config):
    names = config.data.get("class_names", None)
    if names:
        return list(names)
    try:
        from lmsfa_jax.data import reader  # pylint: disable=g-import-not-at-top
        return reader.class_names(config.data.name, config.data.data_dir)
    except FileNotFoundError:
        return [f"class{k}" for k in range(config.model.num_classes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="training run directory")
    parser.add_argument("--source", required=True, help="image, folder of images or video file")
    parser.add_argument("--config", default=None, help="config file (.py or .json; default: WORKDIR/config.json)")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a checkpoint path")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--out", default=None, help="output folder (default: WORKDIR/predict)")
    parser.add_argument("--random-init", action="store_true", help="randomly initialised model (smoke test)")
    args = parser.parse_args(argv)

    workdir, source = pathlib.Path(args.workdir), pathlib.Path(args.source)
    try:
        if not source.exists():
            raise FileNotFoundError(f"source not found: {source}")
        config = evaluator.load_config(args.config or workdir / "config.json")
        apply_fn, variables = evaluator.build_model_and_variables(
            config, workdir, args.checkpoint, random_init=args.random_init)
    except FileNotFoundError as e:  # missing config, checkpoint or source
        sys.exit(f"error: {e}")
    out = pathlib.Path(args.out) if args.out else workdir / "predict"
    out.mkdir(parents=True, exist_ok=True)
    video_fps = None
    if source.suffix.lower() in VIDEO_SUFFIXES:
        video_fps = cv2.VideoCapture(str(source)).get(cv2.CAP_PROP_FPS) or 25.0
    records, latencies = predict(apply_fn, variables, iter_frames(source), _class_names(config),
                                 config.data.image_size, out, args.conf, args.iou, args.max_det, video_fps)
    (out / "instances.json").write_text(json.dumps(records))
    mean_ms = float(np.mean(latencies))
    print(f"{len(records)} image(s), {sum(len(r['instances']) for r in records)} instances; "
          f"batch-1 latency {mean_ms:.1f} ms ({1000 / mean_ms:.1f} FPS, pre/post-processing included); "
          f"wrote {out}")
    return records


if __name__ == "__main__":
    main()
