"""The parts of multi-process runs that one process can check: when a run is multi-process, how
work is split between processes (batch rows, evaluation shares), and the start-up errors."""
import jax
import numpy as np
import pytest

from lmsfa_jax import cli, distributed
from lmsfa_jax.data import pipeline
from lmsfa_jax.data import synthetic
from lmsfa_jax.errors import InputError
from lmsfa_jax.training import step as step_lib


@pytest.mark.parametrize("args, environ, expected", [
    ({}, {}, False),                                                     # a plain run
    ({"num_processes": 2, "process_id": 0, "coordinator_address": "h:1"}, {}, True),
    ({"num_processes": 1}, {}, False),
    ({"process_id": 3}, {}, True),                                        # the rest from the cluster
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1"}, True),
    ({}, {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "8"}, True),   # inside srun
    ({}, {"SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1"}, False),
    ({}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}, False),              # a batch script, not srun
    ({}, {"OMPI_COMM_WORLD_SIZE": "4"}, True),
    ({"mode": "yes"}, {}, True),                                          # TPU pod: JAX detects it
    ({"mode": "no"}, {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "8"}, False),
])
def test_when_a_run_is_multi_process(args, environ, expected):
    args = dict(args)
    assert distributed.requested(args.pop("mode", "auto"), environ=environ, **args) is expected


def test_contradicting_or_late_distributed_flags_are_one_line_errors():
    with pytest.raises(InputError, match="contradicts"):
        distributed.requested("no", num_processes=2)
    jax.devices()  # JAX has started: too late to join a multi-process run
    with pytest.raises(InputError, match="before JAX starts"):
        cli.parse(["--num_processes=2", "--process_id=1", "--coordinator_address=127.0.0.1:1"], "doc",
                  uses_jax=False, distributed=True)


@pytest.mark.parametrize("n", range(9))
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shares_cover_every_item_once_and_process_0_first(n, count):
    shares = [distributed.shard_range(n, count, i) for i in range(count)]
    assert [i for share in shares for i in share] == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert n == 0 or len(shares[0]) > 0


def test_one_process_gathers_and_waits_for_itself():
    assert distributed.gather_json({"a": [1, 2.5]}) == [{"a": [1, 2.5]}]
    calls = []
    assert distributed.main_first("x", lambda: calls.append(1) or 7) == 7 and calls == [1]
    assert step_lib.process_rows(step_lib.make_mesh(), 8) == range(8)


def test_process_rows_make_up_the_global_batch(tmp_path):
    # Process p of P builds rows [p B/P, (p+1) B/P) of each batch: together, the single-process batch.
    name, data_dir = synthetic.ensure_synthetic_dataset(tmp_path, 8, 2, 48, seed=0)
    config = pipeline.default_data_config()
    config.update(name=name, data_dir=data_dir, image_size=64, max_instances=8, mosaic=1.0)
    whole = pipeline.InputPipeline(config, "train", 4, train=True, seed=3, total_epochs=2)
    parts = [pipeline.InputPipeline(config, "train", 4, train=True, seed=3, total_epochs=2, rows=rows)
             for rows in (range(0, 2), range(2, 4))]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 2
    for epoch in range(2):
        for batch, *pieces in zip(whole.epoch(epoch), *(p.epoch(epoch) for p in parts)):
            assert pieces[0]["images"].shape[0] == 2
            for key, value in batch.items():
                np.testing.assert_array_equal(np.concatenate([p[key] for p in pieces]), value, err_msg=key)
