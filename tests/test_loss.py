"""Segmentation loss: golden match with Ultralytics 8.2.50 v8SegmentationLoss, and properties."""
import functools

import jax
import numpy as np
import pytest

from lmsfa_jax.losses import segmentation_loss

COMPONENTS = ("box", "seg", "cls", "dfl")


@pytest.fixture(scope="module")
def golden(golden_dir):
    with np.load(golden_dir / "yolov8seg_loss_golden.npz") as data:
        return {key: data[key] for key in data.files}


def padded_case(golden, case, max_instances=None):
    """Golden case in our layout: NHWC maps and the padded batch dict (valid slots first)."""
    g = lambda key: golden[f"{case}/{key}"]
    feats = [np.transpose(g(f"feat{i}"), (0, 2, 3, 1)) for i in range(3)]
    mask_coef = np.transpose(g("mask_coef"), (0, 2, 1))
    protos = np.transpose(g("protos"), (0, 2, 3, 1))
    batch_size, (height, width) = feats[0].shape[0], g("imgsz")
    image_of = g("gt_batch_idx").astype(int)
    max_instances = max_instances or max(int(np.bincount(image_of, minlength=batch_size).max()), 1)
    # Ultralytics' preprocess: scale normalised cxcywh to pixels, then xywh -> xyxy.
    cxcywh = g("gt_bboxes") * np.array([width, height, width, height], np.float32)
    half = cxcywh[:, 2:] / 2
    xyxy = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
    mask_hw = protos.shape[1:3]
    # Padding slots hold junk so that a loss that failed to ignore them would show it.
    boxes = np.tile(np.array([5.0, 5.0, 60.0, 70.0], np.float32), (batch_size, max_instances, 1))
    labels = np.ones((batch_size, max_instances), np.int32)
    valid = np.zeros((batch_size, max_instances), bool)
    masks = np.ones((batch_size, max_instances, *mask_hw), np.uint8)
    for b in range(batch_size):
        rows = np.nonzero(image_of == b)[0]
        boxes[b, : len(rows)] = xyxy[rows]
        labels[b, : len(rows)] = g("gt_cls")[rows, 0]
        valid[b, : len(rows)] = True
        masks[b, : len(rows)] = g("gt_masks")[rows]
    batch = {"boxes": boxes, "labels": labels, "valid": valid, "masks": masks}
    return feats, mask_coef, protos, batch, int(g("nc"))


@functools.lru_cache(maxsize=None)
def jitted_loss(num_classes):
    return jax.jit(functools.partial(segmentation_loss, num_classes=num_classes))


def run_loss(feats, mask_coef, protos, batch, num_classes):
    total, parts = jitted_loss(num_classes)(feats, mask_coef, protos, batch)
    return float(total), {k: float(v) for k, v in parts.items()}


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_matches_ultralytics_golden(golden, case):
    feats, mask_coef, protos, batch, nc = padded_case(golden, case)
    total, parts = run_loss(feats, mask_coef, protos, batch, nc)
    expected = dict(zip(COMPONENTS, golden[f"{case}/loss_box_seg_cls_dfl"].tolist()))
    rel = {k: abs(parts[k] - expected[k]) / abs(expected[k]) for k in COMPONENTS}
    worst = max(rel, key=rel.get)
    assert rel[worst] < 1e-4, f"case {case}: worst component {worst} rel err {rel[worst]:.2e}; got {parts}, want {expected}"
    expected_total = float(golden[f"{case}/loss_total"])
    assert total == pytest.approx(expected_total, rel=1e-4)


def test_more_padding_gives_same_loss(golden):
    tight = padded_case(golden, "b")
    loose = padded_case(golden, "b", max_instances=5)
    assert loose[3]["valid"].shape[1] > tight[3]["valid"].shape[1]
    total_tight, parts_tight = run_loss(*tight)
    total_loose, parts_loose = run_loss(*loose)
    for k in COMPONENTS:
        assert parts_loose[k] == pytest.approx(parts_tight[k], rel=1e-6), k
    assert total_loose == pytest.approx(total_tight, rel=1e-6)


def test_jit_matches_eager(golden):
    feats, mask_coef, protos, batch, nc = padded_case(golden, "b")
    total_jit, parts_jit = run_loss(feats, mask_coef, protos, batch, nc)
    total_eager, parts_eager = segmentation_loss(feats, mask_coef, protos, batch, nc)
    for k in COMPONENTS:
        np.testing.assert_allclose(parts_jit[k], float(parts_eager[k]), rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(total_jit, float(total_eager), rtol=1e-5)


def _gradients(feats, mask_coef, protos, batch, nc):
    def total(f, c, p):
        return segmentation_loss(f, c, p, batch, nc)[0]

    return jax.jit(jax.grad(total, argnums=(0, 1, 2)))(feats, mask_coef, protos)


def test_gradients_are_finite_and_reach_every_input(golden):
    feats, mask_coef, protos, batch, nc = padded_case(golden, "b")
    grad_feats, grad_coef, grad_protos = _gradients(feats, mask_coef, protos, batch, nc)
    for name, g in [("feats", grad_feats), ("mask_coef", grad_coef), ("protos", grad_protos)]:
        for leaf in jax.tree_util.tree_leaves(g):
            assert np.all(np.isfinite(leaf)), name
        assert any(np.any(leaf != 0) for leaf in jax.tree_util.tree_leaves(g)), f"no gradient reaches {name}"
    # Box-distribution channels of the first image (no objects) get no gradient; its class logits do.
    assert np.all(np.asarray(grad_feats[0])[0, ..., :64] == 0)
    assert np.any(np.asarray(grad_feats[0])[0, ..., 64:] != 0)


def test_empty_batch_has_only_class_loss(golden):
    feats, mask_coef, protos, batch, nc = padded_case(golden, "b")
    batch = {**batch, "valid": np.zeros_like(batch["valid"])}
    total, parts = run_loss(feats, mask_coef, protos, batch, nc)
    assert parts["box"] == parts["seg"] == parts["dfl"] == 0.0
    # No targets: class loss is the plain BCE sum against zeros (divided by max(0, 1) = 1), times cls gain.
    logits = np.concatenate([f.reshape(f.shape[0], -1, f.shape[-1]) for f in feats], axis=1)[..., 64:]
    expected_cls = 0.5 * np.sum(np.logaddexp(0.0, logits.astype(np.float64)))
    assert parts["cls"] == pytest.approx(expected_cls, rel=1e-5)
    assert total == pytest.approx(expected_cls * feats[0].shape[0], rel=1e-5)
    for leaf in jax.tree_util.tree_leaves(_gradients(feats, mask_coef, protos, batch, nc)):
        assert np.all(np.isfinite(leaf))


def test_mismatched_mask_size_is_rejected(golden):
    feats, mask_coef, protos, batch, nc = padded_case(golden, "b")
    batch = {**batch, "masks": batch["masks"][..., ::2, ::2]}
    with pytest.raises(ValueError, match="masks"):
        segmentation_loss(feats, mask_coef, protos, batch, nc)
