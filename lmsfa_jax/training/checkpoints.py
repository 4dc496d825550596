"""Orbax checkpoints of a run: `<workdir>/checkpoints/<step>/` holding the whole `TrainState`
('state'), the EMA model variables ('ema': {'params', 'batch_stats'}, what evaluation loads) and
'meta' ({'epoch': epochs completed, 'step'}); the run's config is `<workdir>/config.json`.

Kept: the latest `keep_latest` checkpoints and the best by validation mask mAP50-95 (BEST_METRIC
in the epoch record passed to `save`; its VAL_PREFIX fields are stored with the checkpoint). Saving
is asynchronous: `save` returns once the arrays are copied off the device; call `wait` (or `close`)
before reading the files.

    restore_variables("runs/peld", "best")   # EMA variables for evaluation / export

A checkpoint that cannot be read back (a truncated array file, a missing `_METADATA`) raises
`DamagedCheckpointError` naming its directory, in one line. Resuming (`restore_latest`) falls back
to the newest intact checkpoint, says so and moves the damaged ones to
`<workdir>/checkpoints_damaged/`.

Multi-process runs: every process calls `save` and `restore_latest` (all take part; process 0 writes
the metadata and moves damaged checkpoints), on one shared directory. The state is replicated, so a
run resumes whatever the number of processes and devices that saved it; `restore_variables` (and
`load_item`) give every process its own copy whatever the topology that saved the checkpoint.
"""
import json
import pathlib
import shutil
import sys

import jax
from absl import logging as absl_logging
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from lmsfa_jax import distributed
from lmsfa_jax.errors import InputError, first_line

VAL_PREFIX = "val/"                       # validation metrics in an epoch record
BEST_METRIC = f"{VAL_PREFIX}mask_mAP50-95"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"       # where resuming moves checkpoints it cannot read

# Replicated arrays are written whole by one replica. Orbax's default, replica-parallel writing,
# splits each array between its replicas with eager slices, one compilation per leaf shape and
# device: 8 s of the first save of a two-device run, to share out a state of a few MB.
def _register_whole_array_writer() -> None:
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns that it overrides its default
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
    finally:
        absl_logging.set_verbosity(verbosity)


_register_whole_array_writer()


class DamagedCheckpointError(InputError):
    """A checkpoint that cannot be restored; the message names its directory and the cause."""

    def __init__(self, message: str, step_dir: pathlib.Path | None = None):
        super().__init__(message)
        self.step_dir = step_dir   # the checkpoint's directory, when the error is about one


def _best_value(metrics) -> float:
    return float(metrics[BEST_METRIC])


def _manager(directory, keep_latest: int = 2, async_save: bool = True, read_only: bool = False):
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep_latest),
        checkpoint_managers.BestN(get_metric_fn=_best_value, reverse=False, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    # best_fn as well: without it best_step() silently returns the latest step.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_best_value, best_mode="max",
        enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1)
    verbosity = absl_logging.get_verbosity()
    if read_only:  # orbax warns that a read-only manager is read-only
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return ocp.CheckpointManager(pathlib.Path(directory).expanduser().absolute(), options=options,
                                     item_names=("state", "ema", "meta"))
    finally:
        absl_logging.set_verbosity(verbosity)


class Checkpointer:
    """Saves and restores the `TrainState` of a run under `<workdir>/checkpoints`."""

    def __init__(self, workdir, keep_latest: int = 2, async_save: bool = True):
        self.directory = pathlib.Path(workdir).expanduser() / CHECKPOINT_DIR
        self._manager = _manager(self.directory, keep_latest, async_save)

    def save(self, state, epoch: int, record: dict | None = None) -> None:
        """Checkpoint after `epoch` epochs. `record`: the epoch's metrics; on validated epochs (with
        BEST_METRIC) its validation metrics rank the checkpoint for 'best'."""
        step = int(state.step)
        metrics = None
        if record and BEST_METRIC in record:
            metrics = {k: v for k, v in record.items() if k.startswith(VAL_PREFIX)}
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), ema=ocp.args.StandardSave(state.ema_variables()),
            meta=ocp.args.JsonSave({"epoch": int(epoch), "step": step})),
            metrics=metrics)

    def restore_latest(self, state):
        """-> (state, epochs completed) from the newest checkpoint that can be restored, or None if
        there is none.

        `state` is a template (same structure, shapes and shardings), e.g. a freshly built one.
        Newer checkpoints that cannot be restored are named on stderr and moved to DAMAGED_DIR; if
        none can be, DamagedCheckpointError names them all (a run never silently starts afresh)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        damaged = []
        for step in reversed(self.all_steps()):
            try:
                restored = _restoring(self.directory / str(step), ("state", "meta"),
                                      lambda s=step: self._manager.restore(s, args=ocp.args.Composite(
                                          state=ocp.args.StandardRestore(abstract),
                                          meta=ocp.args.JsonRestore())))
            except DamagedCheckpointError as error:
                damaged.append(error)
                continue
            if damaged:
                self._set_aside(damaged, step)
            return restored.state, int(restored.meta["epoch"])
        if damaged:
            raise DamagedCheckpointError(
                f"no checkpoint in {self.directory} can be restored: " + "; ".join(map(str, damaged))
                + ". If the run's config changed (model, optimizer), resume with its original config; "
                "otherwise move the checkpoints away to start the run again")
        return None

    def _set_aside(self, damaged: list, intact_step: int) -> None:
        """Moves the damaged checkpoints out of the way of new ones, saying so on stderr (process 0;
        the others wait for it)."""
        if distributed.is_main():
            for error in damaged:
                target = self.directory.parent / DAMAGED_DIR / error.step_dir.name
                while target.exists():
                    target = target.with_name(target.name + "_")
                target.parent.mkdir(exist_ok=True)
                shutil.move(error.step_dir, target)
                print(f"warning: {error}; moved it to {target}", file=sys.stderr)
            print(f"warning: resuming from step {intact_step}, the newest intact checkpoint", file=sys.stderr)
        distributed.barrier("damaged checkpoints set aside")
        self._manager.reload()

    def best_step(self):
        return self._manager.best_step()

    def latest_step(self):
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def _locate(path, checkpoint):
    """(checkpoints dir, step) for a workdir / checkpoints dir and 'best' | 'latest' | step, or a
    step directory (`.../checkpoints/<step>`)."""
    if isinstance(checkpoint, (str, pathlib.Path)) and str(checkpoint) not in ("best", "latest") \
            and not str(checkpoint).isdigit():  # a checkpoint path given in place of best / latest
        path, checkpoint = checkpoint, "best"
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path not found: {path}")
    if path.name.isdigit() and (path / "ema").is_dir():
        return path.parent, int(path.name)
    directory = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    if not any(p.name.isdigit() for p in directory.iterdir()):
        raise FileNotFoundError(f"no checkpoints in {directory}")
    manager = _manager(directory, read_only=True)
    if checkpoint == "best":
        step = manager.best_step()
        if step is None:  # no checkpoint has validation metrics
            step = manager.latest_step()
    elif checkpoint == "latest":
        step = manager.latest_step()
    else:
        step = int(checkpoint)
        if step not in manager.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; "
                                    f"have {sorted(manager.all_steps())}")
    manager.close()
    if step is None:
        raise FileNotFoundError(f"no checkpoints in {directory}")
    return directory, step


def resolve_step(path, checkpoint: str = "best") -> int:
    """The step `restore_variables(path, checkpoint)` loads (e.g. what 'best' means today)."""
    return _locate(path, checkpoint)[1]


def restore_variables(path, checkpoint: str = "best") -> dict:
    """EMA model variables {'params', 'batch_stats'} of a run's checkpoint.

    path: a workdir, its `checkpoints` dir, or one step dir (`.../checkpoints/<step>`, then
    `checkpoint` is ignored). checkpoint: 'best' (highest validation mask mAP50-95; the latest if
    no checkpoint has validation metrics), 'latest', a step number, or a path used instead of
    `path` (a workdir or checkpoints dir given this way means its best checkpoint). Raises
    FileNotFoundError naming the path when there is nothing to load.
    """
    directory, step = _locate(path, checkpoint)
    step_dir = directory / str(step)
    restored = _restoring(step_dir, ("ema",), lambda: load_item(step_dir / "ema"))
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def load_item(path):
    """A saved item (`<step>/ema`, `<step>/state`) as arrays on this process's first device, whatever
    the devices and processes that saved it."""
    path = pathlib.Path(path).expanduser().absolute()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                          ocp.StandardCheckpointHandler().metadata(path))
    return ocp.StandardCheckpointer().restore(path, target)


def _restoring(step_dir: pathlib.Path, items, restore):
    """restore() -> its result; if the checkpoint in `step_dir` (items: the parts read) cannot be
    read, DamagedCheckpointError naming it, with the cause in one line."""
    damaged = f"checkpoint {step_dir} is damaged or unreadable"
    missing = [f"{item}/_METADATA" for item in items
               if item != "meta" and not (step_dir / item / "_METADATA").is_file()]
    if missing:
        raise DamagedCheckpointError(f"{damaged}: {', '.join(missing)} missing", step_dir)
    _drop_closed_loop_reports()
    try:
        return restore()
    except Exception as error:  # pylint: disable=broad-except  (orbax/TensorStore: ValueError, OSError, ...)
        raise DamagedCheckpointError(f"{damaged}: {_cause(error)}", step_dir) from error


def _cause(error: Exception) -> str:
    """A restore error in one short line: TensorStore nests its causes ('Error opening ...: Error
    reading ...: <cause>') and appends a JSON spec; keep the innermost cause."""
    causes = first_line(error, limit=100_000).split(" [tensorstore_spec")[0].split(": ")
    while len(causes) > 1 and len(": ".join(causes)) > 300:
        causes.pop(0)
    return ": ".join(causes)


def _drop_closed_loop_reports() -> None:
    """When an orbax restore fails, TensorStore reads still in flight complete onto orbax's closed
    asyncio loop, and each prints a 'RuntimeError: Event loop is closed' traceback through
    sys.unraisablehook, possibly before the restore's own error reaches us. They say nothing about
    the checkpoint: from the first restore on, drop those reports (only those)."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_reports", False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loop_reports = True
    sys.unraisablehook = hook


def write_config(config, workdir) -> pathlib.Path:
    """Writes the run's config as `<workdir>/config.json`."""
    path = pathlib.Path(workdir).expanduser() / "config.json"
    path.write_text(json.dumps(json.loads(config.to_json_best_effort()), indent=2) + "\n")
    return path
