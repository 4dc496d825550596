"""The augmenting batch pipeline: fixed shapes, geometry kept aligned with pixels, determinism."""

import logging

import numpy as np
import pytest

from lmsfa_jax.data import augment
from lmsfa_jax.data import pipeline
from lmsfa_jax.data import synthetic
from lmsfa_jax.data import transforms

SIZE, M, RATIO = 64, 8, 4


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    name, data_dir = synthetic.ensure_synthetic_dataset(tmp_path_factory.mktemp("work"), 6, 3, 48, seed=0)
    return _with(pipeline.default_data_config(), name=name, data_dir=data_dir, image_size=SIZE,
                 max_instances=M, mask_ratio=RATIO, num_workers=0, cache_ram=True)


def _with(config, **overrides):
    config = config.copy_and_resolve_references()
    config.update(overrides)
    return config


def _check_batch(batch, batch_size):
    expected = {
        "images": ((batch_size, SIZE, SIZE, 3), np.float32),
        "boxes": ((batch_size, M, 4), np.float32),
        "labels": ((batch_size, M), np.int32),
        "valid": ((batch_size, M), np.bool_),
        "masks": ((batch_size, M, SIZE // RATIO, SIZE // RATIO), np.uint8),
        "valid_image": ((batch_size,), np.bool_),
    }
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert 0 <= batch["images"].min() and batch["images"].max() <= 1
    boxes = batch["boxes"][batch["valid"]]
    assert (boxes >= 0).all() and (boxes <= SIZE).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert not batch["boxes"][~batch["valid"]].any() and not batch["masks"][~batch["valid"]].any()
    for mask, box in zip(batch["masks"][batch["valid"]], boxes):  # the mask's box is the object's box
        ys, xs = np.nonzero(mask)
        if len(xs):
            mask_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) * RATIO
            np.testing.assert_allclose(mask_box, box, atol=RATIO + 1)


@pytest.mark.parametrize("train", [True, False])
def test_batches_have_fixed_shapes_and_consistent_targets(data_config, train):
    split = "train" if train else "val"
    batches, num_batches = pipeline.batch_iterator(data_config, split, 2, seed=0, epoch=0, train=train)
    batches = list(batches)
    assert len(batches) == num_batches == (3 if train else 2)  # 6 // 2 dropping; ceil(3 / 2) padding
    for batch in batches:
        _check_batch(batch, 2)
    assert sum(b["valid"].sum() for b in batches) > 0
    if not train:
        np.testing.assert_array_equal(
            np.concatenate([b["valid_image"] for b in batches]), [True] * 3 + [False]
        )
        np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), [0, 1, 2, -1])


def test_batches_depend_only_on_seed_and_epoch(data_config):
    def run(epoch, workers):
        batches, _ = pipeline.batch_iterator(
            data_config, "train", 2, seed=3, epoch=epoch, train=True, num_workers=workers
        )
        return list(batches)

    in_process, pooled = run(1, 0), run(1, 2)
    for a, b in zip(in_process, pooled, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(run(2, 0)[0]["images"], in_process[0]["images"])


def test_mosaic_closes_for_the_last_epochs(data_config):
    with pipeline.InputPipeline(
        _with(data_config, close_mosaic=2), "train", 2, train=True, total_epochs=5
    ) as pipe:
        assert [pipe.mosaic_on(e) for e in range(5)] == [True, True, True, False, False]


def test_objects_beyond_max_instances_are_counted_and_logged(data_config, caplog):
    config = _with(data_config, max_instances=1)
    with pipeline.InputPipeline(config, "val", 3, train=False) as pipe, caplog.at_level(logging.WARNING):
        batch = next(pipe.epoch(0))
    assert batch["valid"].shape == (3, 1)
    assert pipe.dropped_instances[0] > 0 and "max_instances=1" in caplog.text


def _pattern_sample(rng, size):
    """A random-size image with three disjoint coloured polygons painted exactly where its labels say."""
    h, w = rng.integers(size // 2, size + 1, 2)
    image = np.full((h, w, 3), 30, np.uint8)
    polygons, labels = [], []
    for label in range(3):
        center = np.array([(label + 0.5) / 3 * w, rng.uniform(0.4, 0.6) * h])  # side by side, no overlap
        radius = rng.uniform(0.6, 0.9) * min(w / 6, h / 2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 6))
        poly = (center + radius * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)
        mask = transforms.rasterize([poly], h, w)
        image[mask > 0] = 0
        image[mask > 0, label] = 255
        polygons.append([poly])
        labels.append(label)
    return {"image": image, "labels": np.array(labels, np.int32), "polygons": polygons}


@pytest.mark.parametrize("use_mosaic", [True, False])
def test_augmented_polygons_stay_on_their_pixels(use_mosaic):
    size = 128
    cfg = _with(pipeline.default_data_config(), image_size=size, degrees=20.0, shear=5.0, scale=0.3,
                hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.5)
    rng = np.random.default_rng(0)
    samples = [augment.resize_sample(_pattern_sample(rng, size), size) for _ in range(4)]
    checked = 0
    for trial in range(6):
        out = augment.train_sample(
            lambda i: samples[i], trial % 4, 4, np.random.default_rng(trial), cfg, use_mosaic
        )
        assert out["image"].shape == (size, size, 3)
        for label, polygons in zip(out["labels"], out["polygons"]):
            mask = transforms.rasterize(polygons, size, size)
            inner = mask.astype(bool) & ~_dilate(~mask.astype(bool), 2)  # away from the polygon edges
            if inner.sum() < 10:
                continue
            pixels = out["image"][inner].astype(int)
            assert (np.argmax(pixels, axis=1) == label).mean() > 0.98
            assert pixels[:, label].mean() > 200
            checked += 1
    assert checked >= 6


def _dilate(mask, steps):
    out = mask.copy()
    for _ in range(steps):
        out[1:] |= out[:-1].copy()
        out[:-1] |= out[1:].copy()  # noqa: E702
        out[:, 1:] |= out[:, :-1].copy()
        out[:, :-1] |= out[:, 1:].copy()  # noqa: E702
    return out


def test_letterbox_maps_points_by_ratio_and_pad():
    image = np.zeros((30, 60, 3), np.uint8)
    image[10:20, 40:50] = 255
    out, r, (pad_x, pad_y) = transforms.letterbox(image, 64)
    assert out.shape == (64, 64, 3) and r == pytest.approx(64 / 60) and pad_x == 0 and pad_y == 16
    assert (out[:pad_y] == transforms.PAD_VALUE).all() and (out[-pad_y:] == transforms.PAD_VALUE).all()
    x0, y0 = np.array([40, 10]) * r + [pad_x, pad_y]
    x1, y1 = np.array([50, 20]) * r + [pad_x, pad_y]
    assert out[int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1].min() > 200
    assert out[int(y0) - 2, int(x0) - 2].max() < 50


def test_clip_polygon_matches_the_clipped_area():
    square = np.array([[-10, -10], [10, -10], [10, 10], [-10, 10]], np.float32)
    clipped = transforms.clip_polygon(square, 0, 0, 5, 100)
    assert transforms.polygon_area(clipped) == pytest.approx(50.0)
    assert transforms.clip_polygon(square + 50, 0, 0, 20, 20).shape[0] == 0
