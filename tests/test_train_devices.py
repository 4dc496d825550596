"""The data-parallel train step gives the same loss and updated params on 1 and on 2 devices.

Two CPU devices need XLA_FLAGS before JAX starts, so the comparison runs in a subprocess. The step
is the first of tests/shared_run.py's run: its two-device compilation is shared with
tests/test_multihost_training.py."""
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, "tests")
    import shared_run
    shared_run.share_across_layouts()
    import jax, numpy as np
    from lmsfa_jax.data import pipeline, synthetic
    from lmsfa_jax.model import init_variables, model_from_config
    from lmsfa_jax.training import optimizer, state as state_lib, step as step_lib

    assert jax.device_count() == 2, jax.devices()
    config = shared_run.config(sys.argv[1])  # an optimiser step at lr0 from the first step: all params move
    synthetic.prepare_data_config(config, sys.argv[1])
    data = pipeline.InputPipeline(config.data, config.data.train_split, config.batch_size, train=True,
                                  seed=config.seed, total_epochs=config.epochs)
    batch = next(iter(data.epoch(0)))
    assert batch["valid"].any()

    model = model_from_config(config)
    tx = optimizer.make_optimizer(config)
    variables = jax.device_get(init_variables(model, config.seed))
    schedule = optimizer.Schedule.from_config(config, steps_per_epoch=len(data))
    out = {}
    for n in (1, 2):
        mesh = step_lib.make_mesh(jax.devices()[:n])
        state = step_lib.replicate(state_lib.create_train_state(variables, tx), mesh)
        train_step = step_lib.make_train_step(model, tx, schedule, config, mesh)
        sharded = step_lib.shard_batch(batch, mesh)
        assert len(sharded["images"].sharding.device_set) == n
        state, metrics = train_step(state, sharded)
        out[n] = jax.device_get((metrics, state.params, state.batch_stats))
    (m1, p1, b1), (m2, p2, b2) = out[1], out[2]
    assert m1["updated"] == 1.0 and m1["lr"] > 0
    for k in ("loss", "box", "seg", "cls", "dfl"):
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-5)
    pairs = [(jax.tree_util.keystr(path), np.asarray(a2, np.float64), np.asarray(a1, np.float64), np.asarray(a0))
             for tree2, tree1, tree0 in ((p2, p1, variables["params"]), (b2, b1, variables["batch_stats"]))
             for (path, a2), a1, a0 in zip(jax.tree_util.tree_leaves_with_path(tree2), jax.tree.leaves(tree1),
                                           jax.tree.leaves(tree0))]
    largest_update = max(np.abs(a1 - a0).max() for _, _, a1, a0 in pairs)
    for name, a2, a1, a0 in pairs:
        # atol: float32 round-off of the two gradient summation orders, 1e-4 of the largest update
        # (it matters where a value is all update, e.g. a bias starting at 0)
        np.testing.assert_allclose(a2, a1, rtol=1e-5, atol=1e-4 * largest_update, err_msg=name)
    moved = sum(not np.array_equal(a1, a0) for _, _, a1, a0 in pairs)
    relative = np.sqrt(sum(((a2 - a1) ** 2).sum() for _, a2, a1, _ in pairs)
                       / sum(((a1 - a0) ** 2).sum() for _, _, a1, a0 in pairs))
    assert relative < 1e-4, relative  # the whole update
    print("OK", float(m1["loss"]), float(m2["loss"]), moved, relative)
''')


def test_one_and_two_devices_give_the_same_step(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=os.environ.get("LMSFA_JAX_CACHE_DIR", str(ROOT / ".jax_cache")))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    ok = [line for line in result.stdout.splitlines() if line.startswith("OK")]
    assert ok, result.stdout
    _, loss1, loss2, moved, _ = ok[0].split()
    assert float(loss1) > 0 and int(moved) > 300  # the step changed (nearly) every variable
