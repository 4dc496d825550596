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


def ellipse_scene(size, count, seed, keep_clear=(0, 0)):
    """count elliptic instances on a grey (size, size) image, none reaching into the top-left
    keep_clear = (width, height) rectangle -> image, boxes, classes, scores, masks."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        while True:
            axes = tuple(int(v) for v in rng.uniform(0.03, 0.15, 2) * size)
            x, y = (int(v) for v in rng.uniform(max(axes), size - max(axes), 2))
            if x - max(axes) >= keep_clear[0] or y - max(axes) >= keep_clear[1]:
                break
        cv2.ellipse(mask, (x, y), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                      for ys, xs in (np.nonzero(m) for m in masks)], np.float32)
    image = np.full((size, size, 3), 90, np.uint8)
    return image, boxes, rng.integers(0, 4, count), rng.uniform(0.25, 0.99, count), masks


def instance_pixels(masks):
    return np.asarray(masks, bool).any(axis=0)


def assert_disjoint_on_canvas(rects, height, width):
    for k, (x0, y0, x1, y1) in enumerate(rects):
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        for b0, c0, b1, c1 in rects[k + 1:]:
            assert x1 <= b0 or b1 <= x0 or y1 <= c0 or c1 <= y0, "label rectangles overlap"


def test_dense_small_overlay_has_disjoint_score_chips_and_a_legend():
    image, boxes, classes, scores, masks = ellipse_scene(160, 30, seed=0, keep_clear=(130, 60))
    style = plots.overlay_style(160, 160)
    occupied = instance_pixels(masks)
    layout = plots.layout_overlay(boxes, classes, scores, CLASS_NAMES, style, occupied)
    assert layout.legend is not None
    x0, y0, x1, y1 = layout.legend
    assert occupied.mean() > 0.3 and not occupied[y0:y1, x0:x1].any()  # in an empty corner
    assert [k for k, _ in layout.legend_rows] == sorted(set(classes.tolist()))
    assert sum(int(text.rsplit("(", 1)[1][:-1]) for _, text in layout.legend_rows) == 30
    assert 3 <= len(layout.labels) <= plots.MAX_LABELS
    assert all(text == f"{scores[i]:.2f}" for i, (text, _) in layout.labels.items())  # names are in the legend
    assert_disjoint_on_canvas([rect for _, rect in layout.labels.values()] + [layout.legend], 160, 160)

    overlay = plots.draw_instances(image, boxes, classes, scores, masks, CLASS_NAMES)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    x0, y0, x1, y1 = layout.legend
    legend = overlay[y0:y1, x0:x1].reshape(-1, 3)
    for label, _ in layout.legend_rows:  # a swatch per class present
        assert (legend == plots.class_colour(label)).all(axis=1).sum() >= 16
    for i, (_, (x0, y0, _, _)) in layout.labels.items():  # chips filled in their class colour
        assert tuple(overlay[y0, x0]) == plots.class_colour(classes[i])


def test_sparse_overlay_names_every_instance_without_legend():
    image, boxes, classes, scores, masks = ellipse_scene(640, 5, seed=1)
    style = plots.overlay_style(640, 640)
    layout = plots.layout_overlay(boxes, classes, scores, CLASS_NAMES, style, instance_pixels(masks))
    assert layout.legend is None
    assert {i: text for i, (text, _) in layout.labels.items()} == {
        i: f"{CLASS_NAMES[classes[i]]} {scores[i]:.2f}" for i in range(5)}
    assert_disjoint_on_canvas([rect for _, rect in layout.labels.values()], 640, 640)


def test_text_and_lines_scale_with_the_image():
    small, medium, large = (plots.overlay_style(s, s) for s in (160, 640, 1280))
    assert small.font_scale < medium.font_scale < large.font_scale
    assert small.line < large.line and large.font_weight > small.font_weight
    (_, height), _ = cv2.getTextSize("A", cv2.FONT_HERSHEY_SIMPLEX, small.font_scale, small.font_weight)
    assert height >= 9  # legible floor on small images
    assert plots.overlay_style(1280, 160) == small  # the shorter side decides


def test_min_side_draws_small_images_on_an_upscaled_copy():
    image, boxes, classes, scores, masks = ellipse_scene(160, 30, seed=2)
    same = plots.draw_instances(image[:, :120], boxes, classes, scores, masks[:, :, :120], CLASS_NAMES)
    assert same.shape == (160, 120, 3) and same.dtype == np.uint8
    big = plots.draw_instances(image[:, :120], boxes, classes, scores, masks[:, :, :120], CLASS_NAMES,
                               min_side=480)
    assert big.shape == (640, 480, 3) and big.dtype == np.uint8
    one = plots.draw_instances(image, boxes[:1], [1], [0.9], masks[:1], CLASS_NAMES, min_side=480)
    ys, xs = np.nonzero(masks[0])
    inside = one[int(ys.mean()) * 3, int(xs.mean()) * 3].astype(int)  # mask centre, scaled by 3
    np.testing.assert_allclose(inside, (90 * 0.55 + np.array(plots.class_colour(1)) * 0.45).astype(int), atol=1)
    assert plots.draw_instances(image, boxes, classes, scores, masks, CLASS_NAMES, min_side=100).shape == (
        160, 160, 3)  # already large enough
    empty = plots.draw_instances(image, np.zeros((0, 4)), [], [], np.zeros((0, 160, 160)), CLASS_NAMES)
    np.testing.assert_array_equal(empty, image)
    with pytest.raises(ValueError, match=r"masks have shape \(30, 80, 160\)"):
        plots.draw_instances(image, boxes, classes, scores, masks[:, ::2], CLASS_NAMES)


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
