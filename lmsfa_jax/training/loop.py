"""The training loop: data, model, optimiser and EMA, periodic validation, metrics, checkpoints.

    python train.py --config configs/peld.py --workdir runs/peld

Outputs in `workdir`: config.json (with the dataset's class names), metrics.jsonl (one record per
epoch: mean train losses, lr, images/s, steps skipped for a NaN/inf and, on validated epochs, box /
mask precision, recall, mAP50, mAP50-95 of the EMA model), TensorBoard event files in tensorboard/
(the same scalars and a few validation overlays), checkpoints/ (latest 2 + best by mask mAP50-95),
training_curves.png at the end. Re-running the same command resumes from the latest checkpoint
(the newest intact one).

The config's values are checked before anything starts (`config_checks`). A step with a NaN/inf
loss or gradients is skipped (`step`); `config.max_consecutive_nonfinite` of them in a row stop
the run with `NonFiniteTrainingError`, the checkpoints holding the last good state.

Multi-process runs (`lmsfa_jax.distributed`): every process runs this loop on its rows of each
global batch; all take part in the checkpoints and validation; process 0 alone prints and writes
metrics, TensorBoard files, plots and config.json. The workdir must be one shared directory.
"""
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
from flax import traverse_util
from tqdm import tqdm

from lmsfa_jax import distributed
from lmsfa_jax import weights as weights_lib
from lmsfa_jax.data import pipeline as pipeline_lib
from lmsfa_jax.data import reader as reader_lib
from lmsfa_jax.data import synthetic
from lmsfa_jax.errors import InputError
from lmsfa_jax.evaluation import evaluator as evaluator_lib
from lmsfa_jax.evaluation import plots
from lmsfa_jax.evaluation import postprocess
from lmsfa_jax.model import init_variables, model_from_config
from lmsfa_jax.training import checkpoints as checkpoints_lib
from lmsfa_jax.training import config_checks
from lmsfa_jax.training import metric_writers
from lmsfa_jax.training import optimizer as optimizer_lib
from lmsfa_jax.training import step as step_lib
from lmsfa_jax.training.state import TrainState, create_train_state

LOSS_NAMES = ("box", "seg", "cls", "dfl")
VAL_OVERLAYS = 4   # validation images drawn into TensorBoard on each validated epoch


class NonFiniteTrainingError(InputError):
    """Training stopped: too many steps in a row had a NaN/inf loss or gradients (the config or the
    data make it diverge). Printed as one line by the commands."""


def load_initial_weights(variables: dict, path) -> tuple[dict, str]:
    """Variables updated from `path` where name and shape match -> (variables, report text).

    path: a PyTorch/Ultralytics state dict (.npz, .pt, .pth; via `weights.load_state_dict_file`)
    or one of our runs (workdir, its checkpoints dir or a step dir; the best EMA weights)."""
    path = pathlib.Path(path).expanduser()
    if path.suffix in (".npz", ".pt", ".pth"):
        variables, report = weights_lib.load_matching_torch_weights(
            variables, weights_lib.load_state_dict_file(path))
        return variables, report.summary()
    source = traverse_util.flatten_dict(checkpoints_lib.restore_variables(path, "best"))
    target = traverse_util.flatten_dict(dict(variables))
    loaded, skipped = 0, []
    for key, value in target.items():
        name = "/".join(key)
        if key not in source:
            skipped.append(f"  {name}: not in the checkpoint")
        elif source[key].shape != value.shape:
            skipped.append(f"  {name}: checkpoint {source[key].shape} vs model {value.shape}")
        else:
            target[key], loaded = jnp.asarray(source[key], value.dtype), loaded + 1
    unused = [f"  {'/'.join(k)}: not in the model" for k in source if k not in target]
    lines = [f"loaded {loaded} of {len(target)} variables"] + (
        [f"{len(skipped) + len(unused)} skipped:"] + skipped + unused if skipped or unused else [])
    return traverse_util.unflatten_dict(target), "\n".join(lines)


def validate(apply_fn, variables, config, reader, num_overlays: int = 0) -> tuple[dict, dict]:
    """Box and mask metrics of `variables` on the validation reader -> (flat 'val/...' metrics,
    {'val/overlay_k': RGB uint8 image} for the first `num_overlays` images)."""
    overlays = {}

    def draw(example, instances):
        if len(overlays) < num_overlays:
            keep = instances["scores"] >= postprocess.DISPLAY_CONF_THRESHOLD
            overlays[f"{checkpoints_lib.VAL_PREFIX}overlay_{len(overlays)}"] = plots.draw_instances(
                example["image"], instances["boxes"][keep], instances["classes"][keep],
                instances["scores"][keep], instances["masks"][keep], reader.class_names)

    report = evaluator_lib.evaluate_split(
        apply_fn, variables, reader, image_size=config.data.image_size, batch_size=config.eval.batch_size,
        progress=False, on_image=draw, **evaluator_lib.postprocess_settings(config))
    out = {}
    for kind, name in (("bbox", "box"), ("segm", "mask")):
        for stat in ("precision", "recall", "mAP50", "mAP50-95"):
            out[f"{checkpoints_lib.VAL_PREFIX}{name}_{stat}"] = float(report.metrics[kind][stat])
    return out, overlays


def record_class_names(config, class_names) -> None:
    """Sets config.data.class_names to the dataset's (in place); a config that names other classes,
    or a model with fewer classes than the dataset, is an InputError; more classes get a warning."""
    names = tuple(class_names)
    if config.data.class_names and tuple(config.data.class_names) != names:
        raise InputError(f"config.data.class_names {list(config.data.class_names)} differ from the "
                         f"classes of dataset {config.data.name!r}: {list(names)}")
    if config.model.num_classes < len(names):
        raise InputError(f"config.model.num_classes={config.model.num_classes} but dataset "
                         f"{config.data.name!r} has {len(names)} classes {list(names)}; set "
                         f"--config.model.num_classes={len(names)}")
    if config.model.num_classes > len(names):
        distributed.print_main(
            f"warning: config.model.num_classes={config.model.num_classes} but dataset "
            f"{config.data.name!r} has {len(names)} classes {list(names)}: the model's other "
            f"{config.model.num_classes - len(names)} class outputs are only ever trained as "
            f"background (set --config.model.num_classes={len(names)} unless that is intended)",
            file=sys.stderr)
    config.data.class_names = names


def _initial_state(config, model, tx, checkpointer, mesh) -> tuple[TrainState, int]:
    """-> (state replicated over `mesh`, epochs completed): the latest checkpoint's, else a new state
    (with init_from)."""
    variables = init_variables(model, config.seed)
    if checkpointer.latest_step() is None and config.init_from:
        variables, report = load_initial_weights(variables, config.init_from)
        distributed.print_main(f"init_from {config.init_from}:\n{report}")
    state = step_lib.replicate(create_train_state(variables, tx), mesh)
    resumed = checkpointer.restore_latest(state)
    if resumed is None:
        return state, 0
    distributed.print_main(f"resuming from {checkpointer.directory} after epoch {resumed[1]}, "
                           f"step {int(resumed[0].step)}")
    return resumed


def train_and_evaluate(config, workdir) -> dict:
    """Trains (or resumes) a run in `workdir`; returns the last metrics record."""
    workdir = pathlib.Path(workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    config = config.copy_and_resolve_references()
    config_checks.check_config(config)
    distributed.main_first("synthetic data", lambda: synthetic.prepare_data_config(config, workdir))

    mesh = step_lib.make_mesh()
    if config.batch_size % mesh.devices.size or config.eval.batch_size % mesh.devices.size:
        raise InputError(f"config.batch_size={config.batch_size} and config.eval.batch_size="
                         f"{config.eval.batch_size} must be multiples of the {mesh.devices.size} devices")
    train_data = pipeline_lib.InputPipeline(config.data, config.data.train_split, config.batch_size,
                                            train=True, seed=config.seed, total_epochs=config.epochs,
                                            rows=step_lib.process_rows(mesh, config.batch_size))
    record_class_names(config, train_data.class_names)
    if distributed.is_main():
        checkpoints_lib.write_config(config, workdir)
    steps_per_epoch = len(train_data)
    validating = config.eval.every_epochs > 0
    val_reader = reader_lib.open_split(config.data.name, config.data.data_dir, config.data.val_split) \
        if validating else None

    model = model_from_config(config)
    tx = optimizer_lib.make_optimizer(config)
    schedule = optimizer_lib.Schedule.from_config(config, steps_per_epoch)
    checkpointer = checkpoints_lib.Checkpointer(workdir, config.checkpoint.keep_latest,
                                                config.checkpoint.async_save)
    state, start_epoch = _initial_state(config, model, tx, checkpointer, mesh)
    train_step = step_lib.make_train_step(model, tx, schedule, config, mesh)
    apply_fn = evaluator_lib.eval_apply_fn(model)
    writer = metric_writers.MetricWriter(workdir, resume_epoch=start_epoch, enabled=distributed.is_main())
    guard = _NonFiniteGuard(config.max_consecutive_nonfinite, checkpointer)

    record = {}
    try:
        for epoch in range(start_epoch, config.epochs):
            state, record = _train_epoch(state, train_step, train_data, mesh, epoch, config, guard)
            last = epoch + 1 == config.epochs
            if validating and ((epoch + 1) % config.eval.every_epochs == 0 or last):
                metrics, overlays = validate(apply_fn, distributed.local_copy(state.ema_variables()),
                                             config, val_reader, VAL_OVERLAYS if writer.enabled else 0)
                record.update(metrics)
                writer.write_images(epoch + 1, overlays)
                distributed.print_main("  " + "  ".join(f"{k[4:]} {v:.3f}" for k, v in metrics.items()
                                                        if "mAP" in k))
            writer.write_epoch(record)
            if (epoch + 1) % config.checkpoint.every_epochs == 0 or last:
                checkpointer.save(state, epoch + 1, record)
    finally:
        train_data.close()
        writer.close()
        checkpointer.wait()
        checkpointer.close()
    if writer.enabled and writer.path.is_file():
        plots.plot_training_curves(writer.path, workdir / "training_curves.png")
    best = checkpointer.best_step() if validating else None
    distributed.print_main(f"results in {workdir}: metrics.jsonl, tensorboard/, training_curves.png, "
                           f"config.json, checkpoints/ (latest step {checkpointer.latest_step()}"
                           + (f", best step {best})" if best else ")"))
    return record


class _NonFiniteGuard:
    """Counts skipped (NaN/inf) train steps in a row; `limit` of them raise NonFiniteTrainingError
    naming the epoch, the step and the checkpoint to go back to."""

    def __init__(self, limit: int, checkpointer):
        self.limit, self.checkpointer, self.in_a_row = limit, checkpointer, 0

    def observe(self, skipped, epoch: int, step: int) -> None:
        """skipped: the step's 'skipped' metric (read here, which waits for that step)."""
        self.in_a_row = self.in_a_row + 1 if float(skipped) else 0
        if self.in_a_row < self.limit:
            return
        latest = self.checkpointer.latest_step()
        kept = (f"the latest checkpoint (step {latest} in {self.checkpointer.directory}) holds the last "
                "good state" if latest is not None else "no checkpoint was saved yet")
        raise NonFiniteTrainingError(
            f"training stopped in epoch {epoch + 1} at step {step}: the last {self.in_a_row} steps "
            f"(from step {step - self.in_a_row + 1}) all had a NaN or inf loss or gradients and were "
            f"skipped, so nothing was updated by them; {kept}. Check the data or lower "
            f"config.optimizer.lr0; config.max_consecutive_nonfinite={self.limit} sets this limit")


def _train_epoch(state, train_step, data, mesh, epoch: int, config, guard: _NonFiniteGuard):
    """One epoch with a progress bar -> (state, record of mean losses over the steps not skipped,
    lr, images/s, skipped steps)."""
    sums, count, timed_steps, t_start = None, 0, 0, None
    first_step, previous = int(state.step), None
    bar = tqdm(data.epoch(epoch), total=len(data), desc=f"epoch {epoch + 1}/{config.epochs}",
               dynamic_ncols=True, disable=not distributed.is_main())
    for batch in bar:
        state, metrics = train_step(state, step_lib.shard_batch(batch, mesh))
        if previous is not None:  # one step late, so that the device is never left idle
            guard.observe(previous, epoch, first_step + count)
        previous = metrics["skipped"]
        sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
        count += 1
        if t_start is None:  # the first step compiles: time from its end
            jax.block_until_ready(metrics)
            t_start = time.perf_counter()
        else:
            timed_steps += 1
        if count % 5 == 0 or count == len(data):
            means = _mean_metrics(jax.device_get(sums), count)
            speed = timed_steps * config.batch_size / max(time.perf_counter() - t_start, 1e-9)
            bar.set_postfix({**{k: f"{means[k]:.3f}" for k in LOSS_NAMES if means[k] is not None},
                             "img/s": f"{speed:.1f}"})
    guard.observe(previous, epoch, first_step + count)
    jax.block_until_ready(state)
    sums = jax.device_get(sums)
    means = _mean_metrics(sums, count)
    elapsed = time.perf_counter() - t_start
    record = {"epoch": epoch + 1, "step": int(state.step),
              **{f"train/{k}": means[k] for k in (*LOSS_NAMES, "loss")}, "lr": means["lr"],
              "train/grad_norm": means["grad_norm"], "train/skipped_steps": int(sums["skipped"]),
              "images_per_s": timed_steps * config.batch_size / elapsed if timed_steps else None}
    return state, record


def _mean_metrics(sums: dict, count: int) -> dict:
    """Means of summed step metrics: the losses over the steps not skipped, grad_norm over the
    optimiser steps (None where there was none), the rest over all steps."""
    kept, updates = count - int(sums["skipped"]), int(sums["updated"])
    divisor = {**{k: kept for k in (*LOSS_NAMES, "loss")}, "grad_norm": updates}
    return {k: (float(v) / divisor[k] if divisor[k] else None) if k in divisor else float(v) / count
            for k, v in sums.items()}
