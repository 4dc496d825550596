"""On-device post-processing: NMS against a numpy reference, padding, masks, letterbox inverse."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmsfa_jax.data import transforms
from lmsfa_jax.evaluation import postprocess as pp


def numpy_iou(box, boxes):
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def numpy_nms(boxes, scores, classes, conf_threshold, iou_threshold):
    """Plain greedy class-aware NMS: indices kept, by descending score."""
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > conf_threshold]
    kept, suppressed = [], np.zeros(len(scores), bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= (numpy_iou(boxes[i], boxes) > iou_threshold) & (classes == classes[i])
    return kept


def random_decoded(rng, num_anchors, num_classes, num_coef, size=64.0):
    """Clustered random boxes so that many overlap; one dominant class per anchor."""
    centres = rng.uniform(8, size - 8, (6, 2))
    cxcy = centres[rng.integers(0, 6, num_anchors)] + rng.normal(0, 3, (num_anchors, 2))
    wh = rng.uniform(6, 20, (num_anchors, 2))
    probs = rng.uniform(0, 0.05, (num_anchors, num_classes))
    classes = rng.integers(0, num_classes, num_anchors)
    scores = rng.permutation(num_anchors) / num_anchors * 0.9 + 0.06  # distinct scores
    probs[np.arange(num_anchors), classes] = scores
    coef = rng.normal(0, 1, (num_anchors, num_coef))
    decoded = np.concatenate([cxcy, wh, probs, coef], axis=1).astype(np.float32)
    xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1).astype(np.float32)
    return decoded, xyxy, scores.astype(np.float32), classes


@pytest.mark.parametrize("seed,iou_threshold", [(0, 0.7), (1, 0.5), (2, 0.3)])
def test_nms_matches_numpy_greedy_reference(seed, iou_threshold):
    rng = np.random.default_rng(seed)
    batch, anchors, nc, nm = 2, 300, 3, 4
    decoded, xyxy, scores, classes = zip(*(random_decoded(rng, anchors, nc, nm) for _ in range(batch)))
    protos = jnp.zeros((batch, 16, 16, nm))
    run = jax.jit(functools.partial(pp.postprocess, conf_threshold=0.25, iou_threshold=iou_threshold,
                                    max_det=300, max_candidates=512))
    dets = run(jnp.asarray(np.stack(decoded)), protos)
    for b in range(batch):
        kept = numpy_nms(xyxy[b], scores[b], classes[b], 0.25, iou_threshold)
        count = int(dets.count[b])
        assert count == len(kept)
        assert 10 < count < (scores[b] > 0.25).sum()  # the case exercises keeping and suppressing
        np.testing.assert_allclose(np.asarray(dets.boxes[b, :count]), xyxy[b][kept], atol=1e-5)
        np.testing.assert_allclose(np.asarray(dets.scores[b, :count]), scores[b][kept], atol=1e-6)
        np.testing.assert_array_equal(np.asarray(dets.classes[b, :count]), classes[b][kept])


def test_padding_and_max_det():
    rng = np.random.default_rng(3)
    decoded, xyxy, scores, classes = random_decoded(rng, 200, 2, 4)
    dets = pp.postprocess(jnp.asarray(decoded)[None], jnp.ones((1, 16, 16, 4)),
                          conf_threshold=0.25, max_det=5)
    kept = numpy_nms(xyxy, scores, classes, 0.25, 0.7)
    assert dets.boxes.shape == (1, 5, 4) and dets.masks.shape == (1, 5, 16, 16)
    assert int(dets.count[0]) == 5
    np.testing.assert_array_equal(np.asarray(dets.classes[0]), classes[kept[:5]])
    # Fewer candidates than max_det: rows past the count are zero, class -1.
    dets = pp.postprocess(jnp.asarray(decoded[:8])[None], jnp.ones((1, 16, 16, 4)),
                          conf_threshold=0.25, max_det=20)
    count = int(dets.count[0])
    assert count == len(numpy_nms(xyxy[:8], scores[:8], classes[:8], 0.25, 0.7)) and count < 8
    assert (np.asarray(dets.classes[0, count:]) == -1).all()
    assert not np.asarray(dets.scores[0, count:]).any() and not np.asarray(dets.masks[0, count:]).any()


def test_multi_label_keeps_every_class_above_threshold():
    nm = 2
    row = np.array([32, 32, 16, 16, 0.8, 0.6, 0.0005, 1.0, 0.0], np.float32)  # 3 classes
    decoded = jnp.asarray(np.stack([row, row * np.array([1, 1, 1, 1, 0, 0, 0, 1, 1], np.float32)]))[None]
    protos = jnp.ones((1, 16, 16, nm))
    single = pp.postprocess(decoded, protos, conf_threshold=0.001)
    multi = pp.postprocess(decoded, protos, conf_threshold=0.001, multi_label=True)
    assert int(single.count[0]) == 1 and int(single.classes[0, 0]) == 0
    assert int(multi.count[0]) == 2
    assert np.asarray(multi.classes[0, :2]).tolist() == [0, 1]
    np.testing.assert_allclose(np.asarray(multi.scores[0, :2]), [0.8, 0.6])


def test_masks_are_thresholded_and_cropped_to_the_box():
    nm = 2
    protos = np.zeros((1, 16, 16, nm), np.float32)
    protos[0, :, :8, 0] = 1.0   # channel 0 positive on the left half
    protos[0, :, :, 1] = -1.0
    # Box x in [8, 48), y in [16, 40) input pixels -> proto cells x 2..11, y 4..9.
    decoded = np.array([[28, 28, 40, 24, 0.9, 3.0, 1.0]], np.float32)  # logit = 3 * p0 - p1
    dets = pp.postprocess(jnp.asarray(decoded)[None], jnp.asarray(protos))
    expected = np.zeros((16, 16), bool)
    expected[4:10, 2:8] = True  # left half (x < 8 cells), inside the box
    np.testing.assert_array_equal(np.asarray(dets.masks[0, 0]), expected)
    retina = pp.postprocess(jnp.asarray(decoded)[None], jnp.asarray(protos), retina_masks=True)
    mask = np.asarray(retina.masks[0, 0])
    assert mask.shape == (64, 64)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) == (16, 39)
    assert cols.min() == 8 and 29 <= cols.max() <= 33  # the half boundary sits near x = 32


def test_letterbox_round_trip_lands_on_original_pixels():
    # A non-square 40 x 80 original letterboxed into 64 x 64: r = 0.8, pad (0, 16).
    original = np.zeros((40, 80, 3), np.uint8)
    _, ratio, pad = transforms.letterbox(original, 64)
    assert ratio == pytest.approx(0.8) and tuple(pad) == (0, 16)
    # Object in the original: x in [20, 60), y in [10, 30); its left half x in [20, 40) is masked.
    # In the input: x in [16, 48), y in [24, 40) -> box (cx, cy, w, h) = (32, 32, 32, 16);
    # proto cells x 4..11, y 6..9, left half x 4..7.
    nm = 1
    protos = np.full((1, 16, 16, nm), -1.0, np.float32)
    protos[0, :, :8, 0] = 1.0
    decoded = np.array([[[32, 32, 32, 16, 0.9, 1.0]]], np.float32)
    for retina in (False, True):
        dets = pp.postprocess(jnp.asarray(decoded), jnp.asarray(protos), retina_masks=retina)
        count = int(dets.count[0])
        boxes = pp.boxes_to_original(np.asarray(dets.boxes[0, :count]), ratio, pad, (40, 80))
        np.testing.assert_allclose(boxes, [[20, 10, 60, 30]], atol=1e-4)
        masks = pp.masks_to_original(np.asarray(dets.masks[0, :count]), boxes, ratio, pad, (40, 80), (64, 64))
        assert masks.shape == (1, 40, 80) and masks.dtype == np.uint8
        expected = np.zeros((40, 80), np.uint8)
        expected[10:30, 20:40] = 1
        if retina:  # bilinear logits: the half boundary may move by a pixel
            assert np.abs(masks[0].astype(int) - expected).sum() <= 20
            assert masks[0, 10:30, 20:38].all() and not masks[0, :, 42:].any()
        else:
            np.testing.assert_array_equal(masks[0], expected)
        assert not masks[0, :10].any() and not masks[0, 30:].any()


def test_boxes_are_clipped_to_the_original_image():
    boxes = pp.boxes_to_original(np.array([[-10, 10, 70, 60]], np.float32), 0.8, (0, 16), (40, 80))
    np.testing.assert_allclose(boxes, [[0, 0, 80, 40]])
