"""Runs a model over a dataset split in fixed-shape batches and scores it (used by evaluate.py,
predict.py and training's periodic validation).

    report = evaluate_split(eval_apply_fn(model), variables, reader, image_size=640, batch_size=16,
                            **postprocess_settings(config))
    report.metrics      # coco.evaluate's JSON-ready dict (+ "speed_ms_per_image")
    report.results      # COCO results list (predictions.json)

`reader` is any sequence of dataset examples (`lmsfa_jax.data.reader.SplitReader`) with a
`class_names` attribute. Images are letterboxed to image_size x image_size; the last batch is
padded with blank images so that nothing recompiles.

In a multi-process run each process predicts a contiguous share of the split's batches, on its own
devices (no collective per batch, so uneven shares cannot stall), then the processes exchange their
results and ground truth, and every process scores the whole split: the same numbers as one
process, each image counted once (the same batches, hence the same predictions, in the same order).
"""
import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from lmsfa_jax import distributed
from lmsfa_jax.data import transforms
from lmsfa_jax.evaluation import coco
from lmsfa_jax.evaluation import postprocess as pp
from lmsfa_jax.model import jit_inference


class Prepared(NamedTuple):
    """A letterboxed image: image (S, S, 3) float32 in [0, 1], ratio, pad (x, y), original (H, W)."""
    image: np.ndarray
    ratio: float
    pad: tuple
    original_hw: tuple


class EvalReport(NamedTuple):
    metrics: dict
    curves: dict
    results: list
    ground_truth: dict


def prepare_image(image, image_size):
    """RGB uint8 (H, W, 3) -> `Prepared` (letterboxed, scaled to [0, 1])."""
    boxed, ratio, pad = transforms.letterbox(image, image_size)
    return Prepared(boxed.astype(np.float32) / 255.0, ratio, tuple(pad), image.shape[:2])


@functools.lru_cache(maxsize=8)
def make_predictor(apply_fn: Callable[[Any, jax.Array], tuple], **postprocess_kwargs):
    """Jitted (variables, images (B, S, S, 3)) -> (decoded, protos) and protos-side post-processing.

    Returns (infer, post): infer(variables, images) -> (decoded, protos);
    post(decoded, protos) -> `postprocess.Detections`. Kept separate so each can be timed.
    Cached per (apply_fn, settings), so periodic validation reuses the compiled functions.
    """
    infer = jit_inference(apply_fn)
    post = jax.jit(functools.partial(pp.postprocess, **postprocess_kwargs))
    return infer, post


def detections_to_original(detections, index, prepared, image_size):
    """Image `index` of a host-side Detections batch -> boxes, scores, classes, masks in original
    pixels (boxes (D, 4) xyxy, masks (D, H, W) uint8), D = its valid count."""
    count = int(detections.count[index])
    boxes = pp.boxes_to_original(detections.boxes[index, :count], prepared.ratio, prepared.pad,
                                 prepared.original_hw)
    masks = pp.masks_to_original(detections.masks[index, :count], boxes, prepared.ratio, prepared.pad,
                                 prepared.original_hw, (image_size, image_size))
    return {"boxes": boxes, "scores": np.asarray(detections.scores[index, :count]),
            "classes": np.asarray(detections.classes[index, :count]), "masks": masks}


def _batches(indices, batch_size):
    return [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]


def eval_apply_fn(model) -> Callable:
    """(variables, images) -> (decoded, protos): the model in eval mode, computing in float32."""
    return functools.partial(model.clone(dtype=None).apply, train=False)


def postprocess_settings(config) -> dict:
    """The post-processing keyword arguments of a run config (`config.eval`)."""
    return dict(conf_threshold=config.eval.conf_threshold, iou_threshold=config.eval.iou_threshold,
                max_det=config.eval.max_det)


def run_split(apply_fn, variables, reader, *, image_size, batch_size, on_image=None, progress=True,
              conf_threshold=pp.CONF_THRESHOLD, iou_threshold=pp.IOU_THRESHOLD, max_det=pp.MAX_DET,
              multi_label=True, retina_masks=False, indices=None):
    """Predicts the examples `indices` (default all) of `reader` -> (results, ground-truth examples,
    timings in ms/image).

    on_image(example, instances) is called per image with the original-pixel instances (for
    overlays). Timings: preprocess (decode + letterbox), inference (model), postprocess (device
    post-processing + mapping to the original + RLE), after a compiling warm-up call. Batches are
    padded to batch_size, so with small final batches inference time per image is pessimistic.
    """
    infer, post = make_predictor(apply_fn, conf_threshold=conf_threshold, iou_threshold=iou_threshold,
                                 max_det=max_det, multi_label=multi_label, retina_masks=retina_masks)
    results, examples = [], []
    seconds = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    indices = range(len(reader)) if indices is None else indices
    batches = _batches(indices, batch_size)
    for number, batch_indices in enumerate(tqdm(batches, desc="evaluate", disable=not progress)):
        t0 = time.perf_counter()
        batch_examples = [reader[i] for i in batch_indices]
        prepared = [prepare_image(ex["image"], image_size) for ex in batch_examples]
        images = np.zeros((batch_size, image_size, image_size, 3), np.float32)
        images[:len(prepared)] = [p.image for p in prepared]
        t1 = time.perf_counter()
        if number == 0:  # compile outside the timings
            jax.block_until_ready(post(*infer(variables, images)))
        t_infer = time.perf_counter()
        decoded, protos = jax.block_until_ready(infer(variables, images))
        t2 = time.perf_counter()
        detections = jax.device_get(post(decoded, protos))
        for k, (example, prep) in enumerate(zip(batch_examples, prepared)):
            instances = detections_to_original(detections, k, prep, image_size)
            results += coco.detections_to_results(example["image_id"], **instances)
            if on_image is not None:
                on_image(example, instances)
            example.pop("image")  # keep only the annotations
            examples.append(example)
        t3 = time.perf_counter()
        for key, dt in zip(seconds, (t1 - t0, t2 - t_infer, t3 - t2)):
            seconds[key] += dt
    timings = {key: 1000 * s / max(len(indices), 1) for key, s in seconds.items()}
    return results, examples, timings


def evaluate_split(apply_fn, variables, reader, *, image_size, batch_size, progress=True, **kwargs):
    """`run_split` then `coco.evaluate` -> EvalReport; metrics gain "speed_ms_per_image".

    Multi-process: every process must call it (with its own copy of `variables`); each predicts its
    share of the batches (the first share is process 0's, so `on_image` sees the first images
    there) and gets the report of the whole split."""
    batches = distributed.shard_range(-(-len(reader) // batch_size))
    indices = range(batches.start * batch_size, min(batches.stop * batch_size, len(reader)))
    results, examples, timings = run_split(apply_fn, variables, reader, image_size=image_size,
                                           batch_size=batch_size, indices=indices,
                                           progress=progress and distributed.is_main(), **kwargs)
    ground_truth = coco.coco_ground_truth(examples, reader.class_names)
    results, ground_truth, timings = _gather(results, ground_truth, timings, len(indices))
    metrics, curves = coco.evaluate(ground_truth, results, reader.class_names)
    metrics["speed_ms_per_image"] = timings
    return EvalReport(metrics, curves, results, ground_truth)


def _gather(results, ground_truth, timings, num_images):
    """Every process's results and ground truth, in process (= image) order, and the mean timings
    per image; the inputs themselves in a single-process run."""
    shares = distributed.gather_json([results, ground_truth, timings, num_images])
    if len(shares) == 1:
        return results, ground_truth, timings
    annotations = [a for _, gt, _, _ in shares for a in gt["annotations"]]
    for number, annotation in enumerate(annotations):  # numbered 1.. as by one process
        annotation["id"] = number + 1
    ground_truth = {"images": [i for _, gt, _, _ in shares for i in gt["images"]],
                    "annotations": annotations, "categories": ground_truth["categories"]}
    total = max(sum(n for *_, n in shares), 1)
    timings = {key: sum(t[key] * n for _, _, t, n in shares) / total for key in timings}
    return [r for rs, *_ in shares for r in rs], ground_truth, timings
