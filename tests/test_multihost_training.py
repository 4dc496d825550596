"""Two processes on localhost (JAX's distributed runtime, gloo CPU collectives, one device each)
train and evaluate as one.

Against a single-process run with the same global batch, seed and number of devices (two), the
losses, parameters and validation metrics agree, and `evaluate` gives the same report. A process
killed with SIGKILL after a checkpoint makes the other exit with an error within the timeout, and
the re-launched run resumes to the same bits as an uninterrupted one. Checkpoints move between
process counts: a two-process run starts from a checkpoint that one process wrote, and one process
restores a two-process checkpoint.

Every run is `train` (then `evaluate`) in subprocesses, the multi-process ones on a free port,
sharing the persistent compilation cache (tests/shared_run.py).
"""
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import flax
import jax
import numpy as np
import pytest

from lmsfa_jax.distributed import DEFAULT_TIMEOUT_S
from lmsfa_jax.model import init_variables, model_from_config
from lmsfa_jax.training import checkpoints
from lmsfa_jax.training import optimizer as optimizer_lib
from lmsfa_jax.training import step as step_lib
from lmsfa_jax.training.state import create_train_state
from shared_run import EPOCHS, RUN_ARGS, STEPS_PER_EPOCH, config as run_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE_DIR = pathlib.Path(os.environ.get("LMSFA_JAX_CACHE_DIR", str(ROOT / ".jax_cache")))
# --distributed_timeout: a dead (or stalled) process is noticed after this long. Short for the run
# whose process is killed (the test waits for the survivor to notice); the default for the others,
# whose processes may stall for a while on two shared cores (compiling beside another test).
TIMEOUT_S = 15
# Process 1 of the killed run: SIGKILLs itself as soon as the first checkpoint is on disk.
DIE_AFTER_FIRST_CHECKPOINT = """
import os, signal, time
from lmsfa_jax.training import checkpoints
save = checkpoints.Checkpointer.save

def save_and_die(self, state, epoch, record=None):
    save(self, state, epoch, record)
    deadline = time.monotonic() + 120
    while not (self.directory / str(int(state.step))).is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)

checkpoints.Checkpointer.save = save_and_die
"""

# The single-process run compiles its train step (and puts it in the cache), then marks; the
# two-process runs build theirs only after the mark, to load it from the cache (on two cores, two
# compilations of one program side by side take twice as long as one).
MARK_COMPILED = """
import pathlib
from lmsfa_jax.training import step
make = step.make_train_step

def make_and_mark(*args, **kwargs):
    train_step = make(*args, **kwargs)

    def step_and_mark(state, batch):
        out = train_step(state, batch)  # compiled, and in the cache
        pathlib.Path({marker!r}).touch()
        return out
    return step_and_mark

step.make_train_step = make_and_mark
"""
AFTER_MARK = """
import os, time
from lmsfa_jax.training import step
make = step.make_train_step

def wait_and_make(*args, **kwargs):
    deadline = time.monotonic() + 900
    while not os.path.exists({marker!r}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return make(*args, **kwargs)

step.make_train_step = wait_and_make
"""


def _program(*commands: tuple[str, list[str]], before: str = "") -> list[str]:
    """`python` arguments that share compilations (tests/shared_run.py), run `before`, then each
    (name, args) in one process: `lmsfa_jax.<name>.main(args + the multi-process flags)`, as the
    command line would."""
    lines = [f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})",
             "import shared_run; shared_run.share_across_layouts()", before, "from lmsfa_jax import cli"]
    for name, args in commands:
        lines += [f"from lmsfa_jax import {name}", f"cli.run(lambda flags: {name}.main({args!r} + flags))"]
    return ["-c", "\n".join(lines)]


def _train(workdir) -> tuple[str, list[str]]:
    return "train", [*RUN_ARGS, f"--workdir={workdir}", f"--compilation_cache={CACHE_DIR}"]


def _evaluate(workdir, out, *flags: str) -> tuple[str, list[str]]:
    return "evaluate", [f"--workdir={workdir}", "--checkpoint=latest", f"--out={out}",
                        f"--compilation_cache={CACHE_DIR}", *flags]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """The processes of one command, logging to files. A lone process has two CPU devices; several
    are one run (on a free port) of one device each."""

    def __init__(self, log_dir: pathlib.Path, commands: list[list[str]], timeout_s: int):
        port, count = _free_port(), len(commands)
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2" if count == 1 else "1",
                   JAX_SHARE_BINARY_BETWEEN_HOSTS="true",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.logs = [log_dir / f"process_{i}.log" for i in range(count)]
        self.procs = []
        for i, (command, log) in enumerate(zip(commands, self.logs)):
            flags = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
                     f"--process_id={i}", f"--distributed_timeout={timeout_s}"] if count > 1 else []
            with log.open("w") as out:
                self.procs.append(subprocess.Popen([sys.executable, *command, *flags], cwd=ROOT, env=env,
                                                   stdout=out, stderr=subprocess.STDOUT))

    def wait(self, timeout: float) -> list[str]:
        """Waits for every process -> their logs; all must succeed."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
        logs, codes = self.texts(), [p.returncode for p in self.procs]
        assert codes == [0] * len(codes), "\n\n".join(f"process {i} ({c}):\n{log[-4000:]}"
                                                      for i, (c, log) in enumerate(zip(codes, logs)))
        return logs

    def texts(self) -> list[str]:
        return [log.read_text(errors="replace") for log in self.logs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@contextlib.contextmanager
def _launch(log_dir: pathlib.Path, commands: list[list[str]], timeout_s: int = DEFAULT_TIMEOUT_S):
    """Starts one run of len(commands) processes; kills whatever still runs at the end."""
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(log_dir, commands, timeout_s)
    try:
        yield processes
    finally:
        processes.kill()


def _initial_state(config):
    """The state a run starts from, as `training.loop` builds it (before replicating it)."""
    model = model_from_config(config)
    return create_train_state(init_variables(model, config.seed), optimizer_lib.make_optimizer(config))


def _records(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _state(workdir, step: int) -> dict:
    return checkpoints.load_item(workdir / "checkpoints" / str(step) / "state")


def _saved_steps(workdir) -> list[int]:
    checkpointer = checkpoints.Checkpointer(workdir)
    steps = checkpointer.all_steps()
    checkpointer.close()
    return steps


def _named_leaves(tree) -> dict:
    """{'opt_state/inner_state/1/mu/...': array}: names that do not depend on the container types."""
    name = lambda key: str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))  # noqa: E731
    return {"/".join(map(name, path)): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_equal_trees(got, want) -> None:
    """The same leaves under the same names, bit for bit."""
    got, want = _named_leaves(got), _named_leaves(want)
    assert got.keys() == want.keys()
    for path, value in got.items():
        np.testing.assert_array_equal(value, want[path], err_msg=path)


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


def _validation(record: dict) -> dict:
    return {k: v for k, v in record.items() if k.startswith("val/")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs and their logs. All start at once (each process holds a few GiB): 'one', one process
    (two devices) trains, then evaluates itself; 'two', an uninterrupted two-process run that starts
    from a checkpoint of the initial state written by one process (this one); 'killed', two
    processes, process 1 SIGKILLed after the first checkpoint. The two-process runs load their train
    step from the cache once 'one' has compiled it. Last, 'killed' re-launched: it resumes, then
    evaluates run 'one' with two processes."""
    base = tmp_path_factory.mktemp("multihost")
    one, two, killed = base / "one", base / "two", base / "killed"
    initial = _initial_state(run_config(two))
    seed = checkpoints.Checkpointer(two)
    seed.save(initial, epoch=0)
    seed.wait()
    seed.close()
    with contextlib.ExitStack() as stack:
        launch = lambda name, commands, **kw: stack.enter_context(_launch(base / f"logs_{name}", commands, **kw))  # noqa: E731
        marker = str(base / "compiled")
        gate = AFTER_MARK.format(marker=marker)
        single = launch("one", [_program(_train(one), _evaluate(one, one / "eval_one_process"),
                                         before=MARK_COMPILED.format(marker=marker))])
        uninterrupted = launch("two", [_program(_train(two), before=gate)] * 2)
        doomed = launch("killed", [_program(_train(killed), before=gate),
                                   _program(_train(killed), before=gate + DIE_AFTER_FIRST_CHECKPOINT)],
                        timeout_s=TIMEOUT_S)
        survivor, victim = doomed.procs
        victim.wait(timeout=900)
        killed_at = time.monotonic()
        survivor.wait(timeout=TIMEOUT_S + 60)
        killed_run = {"codes": [p.returncode for p in doomed.procs], "logs": doomed.texts(),
                      "waited": time.monotonic() - killed_at,
                      "steps": _saved_steps(killed)}
        logs_two = uninterrupted.wait(timeout=600)
        single.wait(timeout=600)
        logs_resumed = launch("resumed", [_program(_train(killed), _evaluate(one, one / "eval_two_processes",
                                                                             "--save_vis=2"))] * 2).wait(timeout=600)
    return {"one": one, "two": two, "killed": killed, "initial": initial, "killed_run": killed_run,
            "logs_two": logs_two, "logs_resumed": logs_resumed}


def test_two_processes_train_like_one(runs):
    one, two = _records(runs["one"]), _records(runs["two"])
    assert [r["step"] for r in two] == [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    for a, b in zip(one, two):
        for key in ("train/loss", "train/box", "train/seg", "train/cls", "train/dfl"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=f"epoch {a['epoch']} {key}")
    assert _validation(two[-1]) == _validation(one[-1]) and len(_validation(two[-1])) == 8

    # Parameters after the last update, with the 1-vs-2-device test's tolerance rule.
    final = EPOCHS * STEPS_PER_EPOCH
    got, want = _state(runs["two"], final), _state(runs["one"], final)
    pairs = [(jax.tree_util.keystr(path), np.asarray(a2, np.float64), np.asarray(a1, np.float64),
              np.asarray(a0))
             for name in ("params", "batch_stats")
             for (path, a2), a1, a0 in zip(jax.tree_util.tree_leaves_with_path(got[name]),
                                           jax.tree.leaves(want[name]),
                                           jax.tree.leaves(getattr(runs["initial"], name)))]
    largest_update = max(np.abs(a1 - a0).max() for _, _, a1, a0 in pairs)
    for name, a2, a1, _ in pairs:
        np.testing.assert_allclose(a2, a1, rtol=1e-5, atol=1e-4 * largest_update, err_msg=name)
    assert sum(not np.array_equal(a1, a0) for *_, a1, a0 in pairs) > 300  # training moved (nearly) all
    relative = np.sqrt(sum(((a2 - a1) ** 2).sum() for _, a2, a1, _ in pairs)
                       / sum(((a1 - a0) ** 2).sum() for _, _, a1, a0 in pairs))
    assert relative < 1e-4, relative

    # It resumed from the single-process checkpoint; process 0 alone printed.
    log0, log1 = runs["logs_two"]
    assert f"resuming from {runs['two'] / 'checkpoints'} after epoch 0, step 0" in log0
    assert "multi-process run: 2 processes, 2 devices" in log0 and "results in" in log0
    assert "epoch 1/2" not in log1 and "results in" not in log1 and "mAP50" not in log1


def test_a_killed_process_ends_the_run_and_the_relaunch_resumes_bit_identically(runs):
    killed = runs["killed_run"]
    assert killed["codes"][1] == -signal.SIGKILL, killed["logs"][1][-4000:]
    assert killed["codes"][0] not in (0, None), killed["logs"][0][-4000:]  # an error exit, not a hang
    assert killed["waited"] < TIMEOUT_S + 60, killed["waited"]
    assert killed["steps"] == [STEPS_PER_EPOCH]

    assert f"resuming from {runs['killed'] / 'checkpoints'} after epoch 1" in runs["logs_resumed"][0]
    got, want = _records(runs["killed"]), _records(runs["two"])
    assert [_without(r, "images_per_s") for r in got] == [_without(r, "images_per_s") for r in want]
    final = EPOCHS * STEPS_PER_EPOCH  # params, EMA, optimiser, step counters:
    _assert_equal_trees(_state(runs["killed"], final), _state(runs["two"], final))


def test_one_process_resumes_a_two_process_checkpoint(runs):
    # The restore a run does, into the replicated state that a single-process run builds.
    template = step_lib.replicate(runs["initial"], step_lib.make_mesh())
    checkpointer = checkpoints.Checkpointer(runs["two"])
    state, epoch = checkpointer.restore_latest(template)
    checkpointer.close()
    assert epoch == EPOCHS and int(state.step) == EPOCHS * STEPS_PER_EPOCH
    assert all(leaf.sharding == template.step.sharding for leaf in jax.tree.leaves(state))
    _assert_equal_trees(flax.serialization.to_state_dict(state), _state(runs["two"], EPOCHS * STEPS_PER_EPOCH))


def test_evaluate_with_two_processes_gives_the_single_process_report(runs):
    # Run 'one' evaluated by itself (one process), then by the re-launched two-process run.
    log0, log1 = runs["logs_resumed"]
    assert "Speed:" in log0 and "Speed:" not in log1
    alone, shared = (runs["one"] / name for name in ("eval_one_process", "eval_two_processes"))
    assert len(list(shared.glob("vis_*.png"))) == 2  # the first two images: process 0's share
    predictions = json.loads((shared / "predictions.json").read_text())
    assert predictions == json.loads((alone / "predictions.json").read_text())
    assert len({r["image_id"] for r in predictions}) == 4  # every image once
    metrics = [_without(json.loads((out / "metrics.json").read_text()), "speed_ms_per_image")
               for out in (shared, alone)]
    assert metrics[0] == metrics[1] and metrics[0]["num_images"] == 4
