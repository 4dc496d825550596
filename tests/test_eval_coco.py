"""COCO ground truth / results, pycocotools metrics and Ultralytics-style metrics."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from lmsfa_jax.evaluation import coco

CLASS_NAMES = ("adipose", "bone", "ligament", "nerve")


def rectangle(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def synthetic_examples():
    """Three 120x160 images with small, medium and large objects; one object has two polygons."""
    triangle = np.array([[100, 10], [150, 10], [125, 60]], np.float32)
    return [
        {"image_id": 1, "file_name": "a.png", "height": 120, "width": 160,
         "labels": np.array([0, 1]), "boxes": np.array([[2, 3, 12, 19], [100, 10, 150, 60]], np.float32),
         "polygons": [[rectangle(2, 3, 12, 19)], [triangle]]},
        {"image_id": 2, "file_name": "b.png", "height": 120, "width": 160,
         "labels": np.array([2, 3, 1]),
         "boxes": np.array([[0, 0, 110, 110], [120, 5, 150, 40], [115, 60, 158, 118]], np.float32),
         "polygons": [[rectangle(0, 0, 110, 110)], [rectangle(120, 5, 150, 40)],
                      [rectangle(115, 60, 130, 118), rectangle(140, 60, 158, 118)]]},
        {"image_id": 3, "file_name": "c.png", "height": 120, "width": 160,
         "labels": np.array([3]), "boxes": np.array([[40, 40, 90, 100]], np.float32),
         "polygons": [[rectangle(40, 40, 90, 100)]]},
    ]


def gt_masks(gt, image_id):
    image = next(im for im in gt["images"] if im["id"] == image_id)
    anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
    rles = [mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], image["height"], image["width"]))
            for a in anns]
    return anns, np.stack([mask_utils.decode(r) for r in rles])


def gt_as_results(gt):
    results = []
    for image in gt["images"]:
        anns, masks = gt_masks(gt, image["id"])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns])
        labels = [a["category_id"] - coco.CATEGORY_ID_OFFSET for a in anns]
        results += coco.detections_to_results(image["id"], boxes, np.ones(len(anns)), labels, masks)
    return results


def test_ground_truth_layout():
    gt = coco.coco_ground_truth(synthetic_examples(), CLASS_NAMES)
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4]
    assert len(gt["annotations"]) == 6
    first = gt["annotations"][0]
    assert first["bbox"] == [2.0, 3.0, 10.0, 16.0]
    assert first["area"] == 160.0  # pixels of the rasterised rectangle
    two_parts = gt["annotations"][4]
    assert len(two_parts["segmentation"]) == 2
    assert two_parts["area"] == pytest.approx(15 * 58 + 18 * 58)


def test_degenerate_polygon_is_skipped_with_counted_warning():
    examples = synthetic_examples()
    examples[2]["polygons"] = [[np.array([[1, 1], [5, 5]], np.float32)]]
    with pytest.warns(UserWarning, match="skipped 1 objects.*c.png"):
        gt = coco.coco_ground_truth(examples, CLASS_NAMES)
    assert len(gt["annotations"]) == 5


def test_ground_truth_as_predictions_scores_one():
    gt = coco.coco_ground_truth(synthetic_examples(), CLASS_NAMES)
    results = gt_as_results(gt)
    json.dumps(results)  # JSON-ready RLE counts
    metrics, curves = coco.evaluate(gt, results, CLASS_NAMES)
    for kind in coco.IOU_TYPES:
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "precision", "recall",
                     "mAP50", "mAP50-95"):
            assert metrics[kind][name] == pytest.approx(1.0), (kind, name)
        for class_name in CLASS_NAMES:
            per_class = metrics["per_class"][class_name][kind]
            assert per_class["AP"] == pytest.approx(1.0)
            assert per_class["mAP50-95"] == pytest.approx(1.0)
    assert metrics["per_class"]["bone"]["instances"] == 2
    assert metrics["per_class"]["bone"]["images"] == 2
    assert curves["segm"]["pr"].shape == (4, 1000)
    json.dumps(metrics)


def hand_case():
    """One image, two class-0 objects: GT1 10x16 at (2, 3), GT2 10x16 at (30, 3).

    Prediction A (score 0.9) is GT1 exactly. Prediction B (score 0.8) covers the top 10 rows of
    GT2: IoU = 100 / 160 = 0.625, a true positive at IoU thresholds 0.50, 0.55, 0.60 only.
    """
    examples = [{"image_id": 7, "file_name": "hand.png", "height": 40, "width": 50,
                 "labels": np.array([0, 0]), "boxes": np.array([[2, 3, 12, 19], [30, 3, 40, 19]], np.float32),
                 "polygons": [[rectangle(2, 3, 12, 19)], [rectangle(30, 3, 40, 19)]]}]
    gt = coco.coco_ground_truth(examples, CLASS_NAMES[:1])
    _, masks = gt_masks(gt, 7)
    partial = masks[1].copy()
    partial[13:] = 0
    boxes = np.array([[2, 3, 12, 19], [30, 3, 40, 13]], np.float32)
    results = coco.detections_to_results(7, boxes, [0.9, 0.8], [0, 0], np.stack([masks[0], partial]))
    return gt, results, masks[1], partial


def test_partial_overlap_gives_hand_derived_ap():
    gt, results, gt2, partial = hand_case()
    assert (gt2 & partial).sum() / (gt2 | partial).sum() == 0.625
    # At the 3 thresholds <= 0.625 both objects are found with precision 1: AP = 1. At the other 7,
    # recall stops at 0.5 with precision 1, so 51 of COCO's 101 recall points score 1: AP = 51/101.
    expected_ap = (3 * 1.0 + 7 * 51 / 101) / 10
    # Ultralytics-style AP at the 7 failing thresholds: curve (0, 1) (0.5, 1) (0.5, 0.5) (1, 0),
    # read at recall 0.00 ... 1.00 (0.5 reads the last point, 0.5) and integrated by trapezoids:
    # 0.49 * 1 + 0.01 * (1 + 0.5) / 2 + 0.5 * 0.5 / 2 = 0.6225.
    expected_map = (3 * 1.0 + 7 * 0.6225) / 10
    metrics, _ = coco.evaluate(gt, results, CLASS_NAMES[:1])
    for kind in coco.IOU_TYPES:
        m = metrics[kind]
        assert m["AP"] == pytest.approx(expected_ap, abs=1e-9), kind
        assert m["AP50"] == pytest.approx(1.0)
        assert m["AP75"] == pytest.approx(51 / 101)
        assert m["APs"] == pytest.approx(expected_ap)  # both objects are small (area 160)
        assert m["APm"] == -1.0 and m["APl"] == -1.0  # undefined: no medium / large objects
        assert m["AR1"] == pytest.approx(0.5)
        assert m["AR100"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
        assert m["mAP50"] == pytest.approx(1.0)
        assert m["mAP50-95"] == pytest.approx(expected_map)
        assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)


def test_coco_stats_reproduce_cocoeval_summarize():
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io
    gt = coco.coco_ground_truth(synthetic_examples(), CLASS_NAMES)
    results = gt_as_results(gt)
    rng = np.random.default_rng(0)
    for r in results:  # jitter boxes and scores so that the stats are not all 1
        r["bbox"] = [v + float(rng.uniform(-4, 4)) for v in r["bbox"]]
        r["score"] = float(rng.uniform(0.1, 1.0))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco._coco_from_dict(gt)
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = coco.coco_stats(evaluator.eval["precision"], evaluator.eval["recall"], evaluator.params)
    np.testing.assert_allclose([ours[n] for n in coco.COCO_STAT_NAMES], evaluator.stats)
    assert 0.0 < ours["AP"] < 1.0


def test_no_predictions_and_wrong_class_score_zero():
    gt = coco.coco_ground_truth(synthetic_examples(), CLASS_NAMES)
    metrics, _ = coco.evaluate(gt, [], CLASS_NAMES)
    assert metrics["segm"]["AP"] == 0.0 and metrics["bbox"]["mAP50"] == 0.0
    wrong = gt_as_results(gt)
    for r in wrong:
        r["category_id"] = r["category_id"] % 4 + 1
    metrics, _ = coco.evaluate(gt, wrong, CLASS_NAMES)
    assert metrics["bbox"]["AP"] == 0.0 and metrics["segm"]["mAP50-95"] == 0.0


def test_match_predictions_highest_score_wins_a_shared_object():
    iou = np.array([[0.9], [0.97], [0.3]])  # three predictions (by score), one object
    correct = coco.match_predictions(np.array([0, 0, 0]), np.array([0]), iou)
    low = coco.IOU_THRESHOLDS <= 0.9
    assert (correct[:, low] == np.array([[True], [False], [False]])).all()
    # At 0.95 the first prediction no longer qualifies and the second one takes the object.
    assert correct[:, ~low].T.tolist() == [[False, True, False]]


def test_format_table_lists_every_class():
    gt = coco.coco_ground_truth(synthetic_examples(), CLASS_NAMES)
    metrics, _ = coco.evaluate(gt, gt_as_results(gt), CLASS_NAMES)
    lines = coco.format_table(metrics).splitlines()
    assert len(lines) == 2 + len(CLASS_NAMES)
    assert lines[1].split()[:3] == ["all", "3", "6"]
    assert [line.split()[0] for line in lines[2:]] == list(CLASS_NAMES)
    assert "Mask mAP50-95" in lines[0]
