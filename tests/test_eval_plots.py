"""PR curves, instance overlays and training curves are written as valid PNG files."""
import json

import cv2
import numpy as np
import pytest

from lmsfa_jax.evaluation import coco, plots

CLASS_NAMES = ("adipose tissue", "bone", "ligamentum flavum", "nerve")


def read_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_pr_curve_png(tmp_path):
    rng = np.random.default_rng(0)
    correct = rng.random((200, 10)) < 0.6
    stats = coco.ap_per_class(correct, rng.random(200), rng.integers(0, 4, 200), rng.integers(0, 4, 150), 4)
    image = read_png(plots.plot_pr_curves(stats["curves"], CLASS_NAMES, tmp_path / "pr.png"))
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image.std() > 10  # not a blank canvas


def test_overlay_tints_masks_and_labels_boxes(tmp_path):
    image = np.full((120, 200, 3), 90, np.uint8)
    masks = np.zeros((2, 120, 200), np.uint8)
    masks[0, 30:90, 20:80] = 1
    masks[1, 50:110, 120:190] = 1
    boxes = np.array([[20, 30, 80, 90], [120, 50, 190, 110]], np.float32)
    overlay = plots.draw_instances(image, boxes, [0, 3], [0.91, 0.5], masks, CLASS_NAMES)
    assert overlay.shape == image.shape and (image == 90).all()  # input untouched
    inside = overlay[60, 50].astype(int)  # mask interior, away from contour and label
    expected = (90 * (1 - 0.45) + np.array(plots.class_colour(0)) * 0.45).astype(int)
    np.testing.assert_allclose(inside, expected, atol=1)
    assert (overlay[5, 100] == 90).all()  # background untouched
    assert tuple(overlay[80, 189]) == plots.class_colour(3)  # box edge in class colour
    path = plots.save_rgb(overlay, tmp_path / "overlay.png")
    np.testing.assert_array_equal(cv2.cvtColor(read_png(path), cv2.COLOR_BGR2RGB), overlay)


def test_training_curves_png_and_bad_line(tmp_path):
    records = [{"epoch": e, "loss/box": 2.0 / (e + 1), "loss/seg": 3.0 / (e + 1), "mAP50-95(M)": 0.05 * e,
                "lr": 0.01, "tag": "x"} for e in range(6)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    image = read_png(plots.plot_training_curves(path, tmp_path / "curves.png"))
    assert image.shape[1] > 4 * 300  # four panels side by side
    path.write_text(json.dumps(records[0]) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        plots.plot_training_curves(path, tmp_path / "bad.png")
