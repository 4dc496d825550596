"""Orbax checkpoints of a run: `<workdir>/checkpoints/<step>/` holding the whole `TrainState`
('state'), the EMA model variables ('ema': {'params', 'batch_stats'}, what evaluation loads),
'layout' (what 'state' and 'ema' hold) and 'meta' ({'epoch': epochs completed, 'step'}); the run's
config is `<workdir>/config.json`.

'state' and 'ema' are flat: one 1-D array per dtype, the leaves raveled and concatenated in tree
order; 'layout' gives each leaf's key path, dtype and shape (`_flatten`). Orbax spends about 2 ms
of CPU per array, so the ~2,500 arrays of a state took 4.5 s of CPU per save, on a thread that
slowed the next epochs of training; the flat arrays take 0.15 s. Checkpoints written before this
format (one array per leaf, no 'layout') are still read.

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
import math
import pathlib
import shutil
import sys

import jax
import numpy as np
from absl import logging as absl_logging
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers

from lmsfa_jax import distributed
from lmsfa_jax.errors import InputError, first_line

VAL_PREFIX = "val/"                       # validation metrics in an epoch record
BEST_METRIC = f"{VAL_PREFIX}mask_mAP50-95"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"       # where resuming moves checkpoints it cannot read
LAYOUT = "layout"                         # item: {'state': layout, 'ema': layout} (see `_flatten`)

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
                                     item_names=("state", "ema", LAYOUT, "meta"))
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
        flat_state, state_layout = _flatten(state)
        flat_ema, ema_layout = _flatten(state.ema_variables())
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flat_state), ema=ocp.args.StandardSave(flat_ema),
            layout=ocp.args.JsonSave({"state": state_layout, "ema": ema_layout}),
            meta=ocp.args.JsonSave({"epoch": int(epoch), "step": step})),
            metrics=metrics)

    def restore_latest(self, state):
        """-> (state, epochs completed) from the newest checkpoint that can be restored, or None if
        there is none.

        `state` is a template (same structure, shapes and shardings), e.g. a freshly built one.
        Newer checkpoints that cannot be restored are named on stderr and moved to DAMAGED_DIR; if
        none can be, DamagedCheckpointError names them all (a run never silently starts afresh)."""
        damaged = []
        for step in reversed(self.all_steps()):
            try:
                restored = _restoring(self.directory / str(step), ("state", "meta"),
                                      lambda s=step: self._restore(s, state))
            except DamagedCheckpointError as error:
                damaged.append(error)
                continue
            if damaged:
                self._set_aside(damaged, step)
            return restored
        if damaged:
            raise DamagedCheckpointError(
                f"no checkpoint in {self.directory} can be restored: " + "; ".join(map(str, damaged))
                + ". If the run's config changed (model, optimizer), resume with its original config; "
                "otherwise move the checkpoints away to start the run again")
        return None

    def _restore(self, step: int, template) -> tuple:
        """-> (state, epochs completed) of checkpoint `step`, shaped and placed as `template`."""
        if (self.directory / str(step) / LAYOUT).is_dir():
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), layout=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore()))
            state = _into_template(restored.state, restored.layout["state"], template)
        else:  # written before the flat format: one array per leaf
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, template)),
                meta=ocp.args.JsonRestore()))
            state = restored.state
        return state, int(restored.meta["epoch"])

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


def load_item(path) -> dict:
    """A saved item (`<step>/ema`, `<step>/state`) as nested dicts of arrays on this process's first
    device (a dataclass's fields and a sequence's positions become dict keys), whatever the devices
    and processes that saved it."""
    path = pathlib.Path(path).expanduser().absolute()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if (path.parent / LAYOUT).is_dir():
        layout = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path.parent / LAYOUT)[path.name]
        leaves = _unflatten_leaves(ocp.StandardCheckpointer().restore(path), layout)
        return traverse_util.unflatten_dict({tuple(keys): jax.device_put(leaf, device)
                                             for (keys, _, _), leaf in zip(layout, leaves)})
    # written before the flat format: one array per leaf
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                          ocp.StandardCheckpointHandler().metadata(path))
    return ocp.StandardCheckpointer().restore(path, target)


def _leaf_layout(keyed_leaves) -> list:
    """[[key path as names], dtype name, shape] for each (key path, leaf) of a flattened tree."""
    return [[[jax.tree_util.keystr((k,), simple=True) for k in keys], np.dtype(leaf.dtype).name,
             list(np.shape(leaf))] for keys, leaf in keyed_leaves]


def _flatten(tree) -> tuple[dict, list]:
    """A pytree of (replicated) arrays -> (flat, layout). flat: {dtype name: 1-D numpy array}, the
    leaves of that dtype raveled and concatenated in tree order (new host memory, so a train step
    may donate the state's buffers while it is written); layout: `_leaf_layout` of the tree."""
    keyed = jax.tree_util.tree_flatten_with_path(distributed.local_copy(tree))[0]
    groups = {}
    for _, leaf in keyed:
        leaf = np.asarray(leaf)
        groups.setdefault(leaf.dtype.name, []).append(leaf.ravel())
    return {name: np.concatenate(parts) for name, parts in groups.items()}, _leaf_layout(keyed)


def _unflatten_leaves(flat: dict, layout: list) -> list:
    """The leaves (numpy views into `flat`) that `_flatten` packed, in layout order; a size or dtype
    that does not add up is a ValueError."""
    offsets = dict.fromkeys(flat, 0)
    leaves = []
    for keys, dtype, shape in layout:
        size = math.prod(shape)
        if dtype not in flat or flat[dtype].dtype.name != dtype \
                or offsets[dtype] + size > flat[dtype].size:
            raise ValueError(f"the arrays do not hold {'/'.join(keys)} ({dtype} {tuple(shape)}) "
                             f"that the layout names")
        leaves.append(flat[dtype][offsets[dtype]:offsets[dtype] + size].reshape(shape))
        offsets[dtype] += size
    unused = {k: flat[k].size - offsets[k] for k in flat if flat[k].size != offsets[k]}
    if unused:
        raise ValueError(f"the arrays hold values the layout does not name: {unused}")
    return leaves


def _into_template(flat: dict, layout: list, template):
    """The pytree `_flatten(template-like tree)` packed, with `template`'s structure and shardings;
    a checkpoint of another structure (a changed model or optimiser) is a ValueError naming the
    first leaf that differs."""
    keyed, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = _leaf_layout(keyed)
    if layout != expected:
        first = next((i for i, (a, b) in enumerate(zip(layout, expected)) if a != b),
                     min(len(layout), len(expected)))
        describe = lambda entries: (f"{'/'.join(entries[first][0])} {tuple(entries[first][2])}"  # noqa: E731
                                    if first < len(entries) else "nothing")
        raise ValueError(f"it holds another state than this run's: leaf {first} is {describe(layout)}, "
                         f"the run expects {describe(expected)}")
    return jax.tree.unflatten(treedef, [jax.make_array_from_process_local_data(leaf.sharding, value)
                                        for (_, leaf), value in zip(keyed, _unflatten_leaves(flat, layout))])


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
