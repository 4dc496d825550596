"""Overfitting 4 synthetic images at 128 px: the train step really learns (loss down >= 60%, then the
model finds the objects on those images, mask mAP50 >= 0.5)."""
import time

import jax
import numpy as np

from lmsfa_jax.data import augment, synthetic
from lmsfa_jax.evaluation import evaluator
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.model import init_variables, model_from_config
from lmsfa_jax.training import optimizer, state as state_lib, step as step_lib

SIZE, NUM_IMAGES, STEPS = 128, 4, 240


class Examples(list):
    class_names = synthetic.CLASS_NAMES


def _examples():
    examples = Examples()
    for i in range(NUM_IMAGES):
        image, objects = synthetic.generate_image(np.random.default_rng(100 + i), SIZE)
        polygons = [[p] for _, p in objects]
        examples.append({"image": image, "image_id": i + 1, "file_name": f"{i}.jpg", "height": SIZE,
                         "width": SIZE, "labels": np.array([l for l, _ in objects], np.int32),
                         "boxes": np.array([np.r_[p.min(0), p.max(0)] for _, p in objects], np.float32),
                         "polygons": polygons})
    return examples


def _batch(examples, max_instances=8):
    rows = []
    for ex in examples:
        targets, dropped = augment.to_targets(
            {"image": ex["image"], "labels": ex["labels"], "polygons": ex["polygons"]}, max_instances, 4)
        assert dropped == 0
        rows.append({"images": ex["image"].astype(np.float32) / 255, **targets})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_overfits_four_images():
    config = config_lib.default_config()
    config.batch_size = NUM_IMAGES
    config.model.depthwise_impl = "shift"
    config.optimizer.update(name="adamw", lr0=2e-3, lrf=1.0, momentum=0.9, warmup_epochs=0.0,
                            nominal_batch_size=NUM_IMAGES)  # constant lr, a step per batch
    examples = _examples()
    batch = _batch(examples)

    model = model_from_config(config)
    tx = optimizer.make_optimizer(config)
    mesh = step_lib.make_mesh(jax.devices()[:1])
    schedule = optimizer.Schedule.from_config(config, steps_per_epoch=STEPS)
    train_step = step_lib.make_train_step(model, tx, schedule, config, mesh)
    state = step_lib.replicate(state_lib.create_train_state(init_variables(model, 0), tx), mesh)
    sharded = step_lib.shard_batch(batch, mesh)
    losses, t0 = [], time.perf_counter()
    for _ in range(STEPS):
        state, metrics = train_step(state, sharded)
        losses.append(metrics["loss"])
    losses = np.array(jax.device_get(losses))
    print(f"{STEPS} steps in {time.perf_counter() - t0:.0f}s; loss {losses[:5].mean():.2f} -> {losses[-10:].mean():.2f}")
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() <= 0.4 * losses[:5].mean(), (losses[:5], losses[-10:])

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    report = evaluator.evaluate_split(lambda v, x: model.apply(v, x, train=False), variables, examples,
                                      image_size=SIZE, batch_size=NUM_IMAGES, progress=False)
    print({k: round(report.metrics[k]["mAP50"], 3) for k in ("bbox", "segm")})
    assert report.metrics["segm"]["mAP50"] >= 0.5, report.metrics["segm"]
