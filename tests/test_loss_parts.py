"""Building blocks of the loss: anchors and DFL decoding (against the model golden file), assigner."""
import jax.numpy as jnp
import numpy as np

from lmsfa_jax.anchors import dfl_expectation, dist2bbox, make_anchors
from lmsfa_jax.losses.assigner import tal_assign
from lmsfa_jax.losses.box import bbox_ciou


def test_anchors_and_dfl_decode_match_golden(golden_dir):
    with np.load(golden_dir / "lmsfa_n_nc4_golden.npz") as data:
        maps = [np.transpose(data[k], (0, 2, 3, 1)) for k in ("out_p3", "out_p4", "out_p5")]
        points_ref, strides_ref, decoded_ref = data["anchor_points"], data["stride_tensor"], data["decoded"]
    points, strides = make_anchors([m.shape[1:3] for m in maps], (8, 16, 32))
    np.testing.assert_array_equal(points, points_ref)
    np.testing.assert_array_equal(strides, strides_ref)
    flat = np.concatenate([m.reshape(1, -1, m.shape[-1]) for m in maps], axis=1)
    xyxy = dist2bbox(dfl_expectation(flat[..., :64], 16), points) * strides
    cxcywh = jnp.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], -1)
    np.testing.assert_allclose(cxcywh[0], decoded_ref[0, :4].T, rtol=1e-4, atol=1e-3)


def test_assigner_gives_shared_anchor_to_best_overlap_and_ignores_padding():
    # Three anchors on a row; GT 0 covers anchors 0-1, GT 1 covers anchors 1-2, slot 2 is padding
    # whose junk box covers everything. Anchor 1 is in both GTs' top-2 and overlaps GT 1 more.
    points = jnp.array([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]])
    gt_boxes = jnp.array([[[0.0, 0.0, 16.0, 8.0], [8.0, 0.0, 24.0, 8.0], [-100.0, -100.0, 100.0, 100.0]]])
    gt_labels = jnp.array([[1, 2, 0]])
    gt_valid = jnp.array([[True, True, False]])
    pred_boxes = jnp.array([[[0.0, 0.0, 16.0, 8.0], [10.0, 0.0, 24.0, 8.0], [8.0, 0.0, 23.0, 8.0]]])
    pred_scores = jnp.full((1, 3, 3), 0.5)
    out = tal_assign(pred_scores, pred_boxes, points, gt_labels, gt_boxes, gt_valid, topk=2)
    np.testing.assert_array_equal(out.fg, [[True, True, True]])
    np.testing.assert_array_equal(out.gt_index, [[0, 1, 1]])
    np.testing.assert_array_equal(out.labels, [[1, 2, 2]])
    np.testing.assert_array_equal(out.boxes[0], gt_boxes[0, [0, 1, 1]])
    # Scores: one-hot class times align metric normalised so each GT's best anchor gets its best CIoU.
    overlap = np.clip(np.asarray(bbox_ciou(gt_boxes[0, [0, 1, 1]], pred_boxes[0])), 0, None)
    align = 0.5**0.5 * overlap**6
    best_of_gt1 = max(align[1], align[2])
    expected = np.zeros((3, 3))
    expected[0, 1] = overlap[0]
    expected[1, 2] = align[1] * max(overlap[1], overlap[2]) / best_of_gt1
    expected[2, 2] = align[2] * max(overlap[1], overlap[2]) / best_of_gt1
    np.testing.assert_allclose(out.scores[0], expected, rtol=1e-5)
    assert expected[1, 2] < expected[2, 2] < 1.0  # non-trivial: anchor 2 fits GT 1 better than anchor 1
