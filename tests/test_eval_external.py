"""evaluate --write_gt / --predictions / --mask_resolution on a tiny synthetic split: any model's
predictions are scored by the same evaluator as ours."""
import contextlib
import io
import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from lmsfa_jax import cli, evaluate
from lmsfa_jax.data import synthetic
from lmsfa_jax.evaluation import coco, external, mask_resolution
from test_eval_end_to_end import CONFIG  # the same tiny model, so its compiled functions are cached

SIZE = 96  # image side; the quarter grid is 64 / 4 = 16 cells


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """(base command line, the split's ground truth written by --write_gt) of 3 synthetic val images."""
    root = tmp_path_factory.mktemp("external")
    name, data_dir = synthetic.ensure_synthetic_dataset(root / "data", num_train=1, num_val=3, size=SIZE)
    config = root / "config.py"
    config.write_text(CONFIG.format(name=name, data_dir=data_dir))
    args = ["--config", str(config), "--workdir", str(root / "run")]
    gt_path = root / "gt.json"
    assert evaluate.main(args + ["--write_gt", str(gt_path)]) is None  # no checkpoint: the GT only
    return args, json.loads(gt_path.read_text()), gt_path


def polygons_of(gt):
    """-> [(annotation, polygon (P, 2) in pixels)] of every object (the synthetic ones have one polygon)."""
    return [(a, np.array(a["segmentation"][0]).reshape(-1, 2)) for a in gt["annotations"]]


def test_write_gt_is_a_coco_file_of_the_split(split):
    _, gt, gt_path = split
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while loading
        loaded = COCO(str(gt_path))
    assert len(loaded.getImgIds()) == 3 and len(loaded.getAnnIds()) == len(gt["annotations"]) > 3
    assert [c["name"] for c in gt["categories"]] == synthetic.CLASS_NAMES
    image = gt["images"][0]
    assert image["file_name"].endswith(".jpg") and (image["height"], image["width"]) == (SIZE, SIZE)
    first = gt["annotations"][0]
    assert set(first) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
    assert first["area"] == float(loaded.annToMask(loaded.anns[first["id"]]).sum()) > 0


def test_ground_truth_as_predictions_scores_one(split, tmp_path):
    """--write_gt, then that GT as results (score 1; polygons, RLE, by id and by file name)."""
    args, gt, _ = split
    file_names = {im["id"]: im["file_name"] for im in gt["images"]}
    results = []
    for k, a in enumerate(gt["annotations"]):
        image = {"file_name": file_names[a["image_id"]]} if k % 2 else {"image_id": a["image_id"]}
        segmentation = a["segmentation"] if k % 3 else coco.segmentation_to_rle(a["segmentation"], SIZE, SIZE)
        results.append({**image, "category_id": a["category_id"], "score": 1.0, "bbox": a["bbox"],
                        "segmentation": segmentation})
    path = tmp_path / "gt_results.json"
    path.write_text(json.dumps(results))
    report = evaluate.main(args + ["--predictions", str(path), "--out", str(tmp_path / "out"),
                                   "--mask_resolution", "quarter"])
    for kind in ("bbox", "segm", mask_resolution.QUARTER):
        assert report.metrics[kind]["AP"] == pytest.approx(1.0), kind
        assert report.metrics[kind]["mAP50-95"] == pytest.approx(1.0), kind
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["predictions"]["scored"] == len(results) and written["predictions"]["unknown_image"] == 0
    assert written["segm"]["AP"] == report.metrics["segm"]["AP"]
    for png in ("pr_bbox.png", "pr_segm.png", "pr_segm_quarter.png"):
        assert cv2.imread(str(tmp_path / "out" / png)) is not None


def perturbed_predictions(gt, copies=3, seed=0):
    """`copies` of each GT polygon moved, scaled and re-classed at random: [(image id, label,
    polygon (P, 2) in pixels, score)]."""
    rng = np.random.default_rng(seed)
    predictions = []
    for a, polygon in polygons_of(gt) * copies:
        centre = polygon.mean(axis=0)
        moved = (polygon - centre) * rng.uniform(0.85, 1.15) + centre + rng.uniform(-2, 2, 2)
        label = a["category_id"] - 1 if rng.random() < 0.8 else int(rng.integers(4))
        predictions.append((a["image_id"], label, np.clip(moved, 0, SIZE), round(float(rng.uniform(0.05, 1)), 4)))
    return predictions


def test_coco_json_and_ultralytics_txt_give_the_same_metrics(split, tmp_path):
    """The same predictions as a results JSON (RLE or pixel polygons, by image id or file name) and as
    Ultralytics text files (normalised polygons, 6 decimals), plus 2 for an image not in the split."""
    args, gt, _ = split
    predictions = perturbed_predictions(gt)
    stems = {im["id"]: external.file_stem(im["file_name"]) for im in gt["images"]}
    results, lines = [], {stem: [] for stem in stems.values()}
    for k, (image_id, label, polygon, score) in enumerate(predictions):
        (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
        segmentation = [polygon.ravel().tolist()]
        results.append({"category_id": label + 1, "score": score, "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "segmentation": coco.segmentation_to_rle(segmentation, SIZE, SIZE) if k % 2 else segmentation,
                        **({"file_name": stems[image_id] + ".jpg"} if k % 3 else {"image_id": image_id})})
        lines[stems[image_id]].append(" ".join([str(label), *(f"{v:.6f}" for v in (polygon / SIZE).ravel()),
                                                str(score)]))
    results += [{**{k: v for k, v in r.items() if k != "file_name"}, "image_id": 999} for r in results[:2]]
    lines["not_in_split"] = lines[stems[predictions[0][0]]][:2]
    json_path, txt_dir = tmp_path / "results.json", tmp_path / "predict" / "labels"
    json_path.write_text(json.dumps(results))
    txt_dir.mkdir(parents=True)
    for stem, text in lines.items():
        (txt_dir / f"{stem}.txt").write_text("\n".join(text) + "\n")
    from_json = evaluate.main(args + ["--predictions", str(json_path), "--out", str(tmp_path / "json")]).metrics
    from_txt = evaluate.main(args + ["--predictions", str(txt_dir.parent), "--out", str(tmp_path / "txt")]).metrics
    for metrics in (from_json, from_txt):
        assert metrics["predictions"]["scored"] == len(predictions) and metrics["predictions"]["unknown_image"] == 2
    for kind in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "AR100", "precision", "recall", "mAP50", "mAP50-95"):
            assert 0.02 < from_json[kind][name] < 0.995, (kind, name)  # not a trivial case
            assert from_txt[kind][name] == pytest.approx(from_json[kind][name], abs=0.01), (kind, name)


def test_our_predictions_scored_back_give_the_direct_metrics(split, tmp_path):
    """A random model's predictions.json through --predictions: the same results, ground truth and
    metrics as the direct run, at both mask resolutions."""
    args, _, _ = split
    args = [*args[:2], "--workdir", str(tmp_path / "run")]
    direct = evaluate.main(args + ["--random_init", "--mask_resolution", "quarter", "--write_gt",
                                   str(tmp_path / "gt.json")])
    assert json.loads((tmp_path / "gt.json").read_text()) == direct.ground_truth  # what was scored
    predictions = tmp_path / "run" / "eval_val" / "predictions.json"
    rescored = evaluate.main(args + ["--predictions", str(predictions), "--mask_resolution", "quarter"])
    assert len(direct.results) > 20  # conf 0.001 keeps random detections
    assert rescored.results == direct.results and rescored.ground_truth == direct.ground_truth
    assert rescored.metrics.pop("predictions")["scored"] == len(direct.results)
    direct.metrics.pop("speed_ms_per_image")
    assert rescored.metrics == direct.metrics and mask_resolution.QUARTER in direct.metrics
    assert (tmp_path / "run" / "eval_val_predictions" / "metrics.json").is_file()
    with pytest.raises(cli.UsageError, match="--checkpoint and --random_init do not apply"):
        evaluate.main(args + ["--predictions", str(predictions), "--random_init"])


def test_quarter_resolution_forgives_a_one_pixel_shift_on_small_objects():
    """Masks 1 px off on 8 px objects lose IoU at full resolution, not on the 1/4 grid of a 64-px
    input (a 64 x 64 image: 16 x 16 cells of 4 x 4 pixels)."""
    square = lambda x, y, s: np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], np.float32)  # noqa: E731
    examples = [{"image_id": 1, "file_name": "a.png", "height": 64, "width": 64, "labels": np.array([0, 1]),
                 "boxes": np.array([[8, 8, 16, 16], [40, 40, 48, 48]], np.float32),
                 "polygons": [[square(8, 8, 8)], [square(40, 40, 8)]]}]
    gt = coco.coco_ground_truth(examples, ["a", "b"])
    results = [{"image_id": 1, "category_id": k + 1, "score": 0.9, "bbox": [x + 1, x, 8, 8],
                "segmentation": coco.segmentation_to_rle([square(x + 1, x, 8).ravel().tolist()], 64, 64)}
               for k, x in enumerate((8, 40))]
    metrics, curves = coco.evaluate(gt, results, ["a", "b"])
    mask_resolution.add_quarter_metrics(metrics, curves, gt, results, ["a", "b"], image_size=64, progress=False)
    # Full resolution: IoU 56 / 72 = 0.78, found at 6 of 10 thresholds. Grid 16 x 16 (4 px cells): the
    # 1 px shift leaves every cell's coverage at >= 1/2 on the same side, IoU 1.
    assert metrics["segm"]["AP"] == pytest.approx(0.6) and metrics["segm"]["APs"] == pytest.approx(0.6)
    assert metrics[mask_resolution.QUARTER]["AP"] == pytest.approx(1.0)
    assert metrics[mask_resolution.QUARTER]["APs"] == pytest.approx(1.0)  # areas stay original: small
    assert metrics["per_class"]["b"][mask_resolution.QUARTER]["mAP50-95"] == pytest.approx(1.0)
    table = mask_resolution.format_comparison(metrics).splitlines()
    assert len(table) == 4 and "+0.400" in table[1]
    assert mask_resolution.quarter_grid(1080, 1920, 640) == (90, 160)
