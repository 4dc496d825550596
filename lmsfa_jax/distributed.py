"""Multi-process (multi-host) runs on JAX's distributed runtime: start-up, who does what, gathering.

A run of N processes (the hosts of a TPU pod slice, the tasks of a SLURM job, or N processes on one
machine) is N copies of the same command. `initialize` connects them (`jax.distributed`) before JAX
starts; then every process sees all devices (`jax.devices()`), drives its own
(`jax.local_devices()`) and runs the same jitted steps on global arrays. Process 0 writes the run's
files and prints; every process raises its own errors. In a single-process run nothing here
changes anything: process 0 of 1, gathers return [value], barriers return at once.

When a run is multi-process (`requested`, mode 'auto'): --num_processes > 1, --coordinator_address
or --process_id given, JAX_COORDINATOR_ADDRESS set, or a launcher that starts several copies: a
SLURM `srun` step with SLURM_NTASKS > 1, Open MPI's `mpirun` (OMPI_COMM_WORLD_SIZE > 1). A TPU
pod slice is not visible in the environment: pass --distributed=yes there, and JAX reads the
slice's hosts from the TPU metadata. Missing values are detected by `jax.distributed.initialize`
(TPU pod, SLURM, Open MPI).

If a process dies (or stops answering), the coordination service notices within `timeout_s`
(missed heartbeats) and every other process exits with an error; a process that ends with an
error waits at most `timeout_s` at exit for the others, then all exit.
"""
import itertools
import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint import multihost as orbax_multihost

from lmsfa_jax.errors import InputError

MODES = ("auto", "yes", "no")
DEFAULT_TIMEOUT_S = 100    # heartbeat and shutdown timeout (JAX's default heartbeat timeout)
BARRIER_TIMEOUT_S = 3600   # waiting for process 0's work (a dead process ends the run sooner)
_barrier_numbers = itertools.count()


def requested(mode: str, coordinator_address: str | None = None, num_processes: int | None = None,
              process_id: int | None = None, environ=None) -> bool:
    """Whether this process is one of several (the rules in the module docstring)."""
    if mode not in MODES:
        raise InputError(f"--distributed={mode!r}: expected one of {', '.join(MODES)}")
    explicit = coordinator_address or process_id is not None or num_processes is not None
    if mode == "no":
        if explicit:
            raise InputError("--distributed=no contradicts --coordinator_address / --num_processes / "
                             "--process_id")
        return False
    if num_processes == 1:
        return False
    if mode == "yes" or explicit:
        return True
    env = os.environ if environ is None else environ
    srun = "SLURM_STEP_NODELIST" in env and int(env.get("SLURM_NTASKS", "1")) > 1
    mpirun = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    return bool(env.get("JAX_COORDINATOR_ADDRESS")) or srun or mpirun


def initialize(mode: str = "auto", coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """Connects this process to the others (`jax.distributed.initialize`) when `requested`; -> whether
    the run is multi-process. Must run before JAX computes anything; a second call does nothing."""
    if not requested(mode, coordinator_address, num_processes, process_id):
        return False
    if jax.distributed.is_initialized():
        return True
    if jax.config.jax_cpu_collectives_implementation is None:  # CPU processes talk over TCP (gloo)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   heartbeat_timeout_seconds=timeout_s, shutdown_timeout_seconds=timeout_s)
    except RuntimeError as e:
        if "must be called before" in str(e):
            raise InputError("a multi-process run must be set up before JAX starts (start the command "
                             "afresh with the --distributed flags)") from None
        raise
    except ValueError as e:  # nothing given and no TPU pod / SLURM / Open MPI environment found
        raise InputError(f"cannot start a multi-process run ({e}): pass --coordinator_address HOST:PORT, "
                         "--num_processes N and --process_id I (or run under srun / mpirun / a TPU pod)"
                         ) from None
    if jax.default_backend() == "cpu":
        _connect_cpu_collectives()
    print_main(f"multi-process run: {jax.process_count()} processes, {jax.device_count()} devices "
               f"({jax.local_device_count()} on process 0)")
    return True


def _connect_cpu_collectives() -> None:
    """CPU collectives (gloo) connect a group of devices at its first collective and fail if a peer
    is 30 s late (as after uneven compile or evaluation times): connect the groups that training
    and `gather_json` use now, while the processes are in step."""
    mesh = Mesh(np.asarray(jax.devices()), ("all",))
    ones = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("all")),
                                                  np.ones(jax.local_device_count(), np.float32))
    jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))(ones).block_until_ready()
    multihost_utils.process_allgather(np.int32(jax.process_index()))


def is_main() -> bool:
    """Whether this is process 0, the one that writes files and prints."""
    return jax.process_index() == 0


def print_main(*args, **kwargs) -> None:
    """`print` on process 0 only."""
    if is_main():
        print(*args, **kwargs)


def barrier(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
    """Returns once every process has called barrier(name) (through the coordination service: no
    device work); raises after timeout_s."""
    if jax.process_count() > 1:
        key = f"lmsfa_jax/{name}/{next(_barrier_numbers)}"  # a barrier id serves once
        orbax_multihost.get_barrier_sync_fn()(key=key, timeout_ms=timeout_s * 1000)


def main_first(name: str, fn):
    """fn() on process 0, then (after barrier `name`) on the others -> its result: for work whose
    files the others then find (building the synthetic dataset)."""
    if is_main():
        result = fn()
        barrier(name)
        return result
    barrier(name)
    return fn()


def shard_range(n: int, count: int | None = None, index: int | None = None) -> range:
    """Process `index`'s contiguous share of n items when split over `count` processes (default:
    this run's); earlier processes take the remainder, so process 0 gets one whenever n > 0."""
    count = jax.process_count() if count is None else count
    index = jax.process_index() if index is None else index
    return range(-(-index * n // count), -(-(index + 1) * n // count))


def gather_json(value) -> list:
    """`value` (JSON-serialisable) of every process, in process order. Every process must call it."""
    if jax.process_count() == 1:
        return [value]
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.int32(data.size))
    width = 1 << (int(sizes.max()) - 1).bit_length()  # a power of two: few shapes to compile
    padded = np.zeros(width, np.uint8)
    padded[:data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(row[:size].tobytes()) for row, size in zip(rows, sizes)]


def local_copy(tree):
    """This process's copy of a replicated pytree of (global) jax.Arrays, on its first device: an
    input for computations this process runs alone (evaluation)."""
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)
