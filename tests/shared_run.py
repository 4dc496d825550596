"""The tiny training run of the multi-device tests, and one compilation of its train step for all.

tests/test_multihost_training.py trains this run with one process (two devices) and with two
processes (one device each); tests/test_train_devices.py takes one step of it on one and on two
devices. With the same config, every two-device train step is the same program, and with
`share_across_layouts` (called first in each subprocess) one persistent-cache entry serves them all.

Why the cache needs help: on CPU, JAX keys a compiled program by the topology it runs on and the ids
of its devices. A one-process run with two devices (ids 0, 1), a two-process run (ids 0, 2048) and
process 1 of that run (a topology of its own) get three keys for one program, and only process 0 of
a multi-process run writes the cache. Keyed by device kind and the shape of the device assignment
(as JAX keys GPU programs), they share one entry; a CPU executable runs in either layout, since its
collectives are the client's (in-process or gloo). With another JAX version this may do nothing:
the tests then only get slower.
"""
EPOCHS, STEPS_PER_EPOCH = 2, 2
# configs/synthetic.py, tiny: 8 training images of 64 px in batches of 4; SGD with an optimiser
# step at every iteration and no warm-up, so that every step moves (nearly) every parameter.
RUN_ARGS = [
    "--config", "configs/synthetic.py",
    "--config.synthetic.num_train=8", "--config.synthetic.num_val=4", "--config.synthetic.size=64",
    "--config.data.image_size=64", "--config.data.max_instances=8", "--config.batch_size=4",
    "--config.optimizer.name=sgd", "--config.optimizer.lr0=0.01", "--config.optimizer.nominal_batch_size=4",
    "--config.optimizer.warmup_epochs=0",
    f"--config.epochs={EPOCHS}", f"--config.eval.every_epochs={EPOCHS}", "--config.eval.batch_size=2",
    "--config.checkpoint.every_epochs=1",
]


def config(workdir):
    """The run's config, as `train --workdir=workdir` with RUN_ARGS reads it (paths relative to the
    checkout)."""
    from lmsfa_jax import cli  # pylint: disable=import-outside-toplevel
    return cli.parse([*RUN_ARGS, f"--workdir={workdir}"], "", config=cli.CONFIG_REQUIRED, uses_jax=False).config


def share_across_layouts() -> None:
    """Keys JAX's persistent compilation cache by device kind and device-assignment shape (see above)."""
    try:
        from jax._src import cache_key  # pylint: disable=import-outside-toplevel
        hash_options = cache_key._hash_serialized_compile_options  # pylint: disable=protected-access
        cache_key._hash_accelerator_config = cache_key._hash_devices  # pylint: disable=protected-access
    except (ImportError, AttributeError):
        return
    cache_key._hash_serialized_compile_options = (  # pylint: disable=protected-access
        lambda hash_obj, options, strip_device_assignment=False: hash_options(
            hash_obj, options, strip_device_assignment=True))
