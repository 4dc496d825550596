"""The full training config with the reference (Ultralytics 8.x) defaults; configs/*.py start here.

Every field a run reads is defined here or in the layer that owns it (`config.data`:
`data.pipeline.default_data_config`; `config.loss`: `losses.DEFAULT_GAINS`; the `config.eval`
thresholds: `evaluation.postprocess`), so an override of an unknown key (`--config.epochs=...`
spelt wrong) fails with an error naming the key; `config_checks.check_config` checks the values.
"""
import ml_collections

from lmsfa_jax.data.pipeline import default_data_config
from lmsfa_jax.evaluation import postprocess
from lmsfa_jax.losses import DEFAULT_GAINS


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 16          # global batch, split over all devices
    config.epochs = 100
    config.dtype = "float32"        # compute dtype: 'float32' or 'bfloat16' (params stay float32)
    config.init_from = ""           # our checkpoint dir / workdir, or a PyTorch state dict (.npz / .pt)
    # Steps with a NaN/inf loss or gradients are skipped (nothing is updated); after this many in a
    # row training stops, naming the epoch and step.
    config.max_consecutive_nonfinite = 10

    config.model = ml_collections.ConfigDict(dict(num_classes=4, scale="n", depthwise_impl="auto"))
    config.data = default_data_config()
    # When enabled, a synthetic dataset is generated and built into <workdir>/data, and
    # data.name / data.data_dir point there.
    config.synthetic = ml_collections.ConfigDict(dict(
        enabled=False, num_train=32, num_val=8, size=160, seed=0))

    config.optimizer = ml_collections.ConfigDict(dict(
        name="sgd",                 # 'sgd' (Nesterov) or 'adamw'
        lr0=0.01,                   # initial learning rate
        lrf=0.01,                   # final learning rate = lr0 * lrf (linear over the epochs)
        momentum=0.937,             # SGD momentum / Adam beta1
        b2=0.999,                   # Adam beta2
        weight_decay=5e-4,          # on the 'decay' group, scaled by batch * accumulate / nominal
        nominal_batch_size=64,      # gradients are accumulated up to this batch
        warmup_epochs=3.0,          # warm-up length: max(warmup_epochs * steps/epoch, warmup_min_steps)
        warmup_min_steps=100,
        warmup_momentum=0.8,
        warmup_bias_lr=0.1,
        clip_grad_norm=10.0))
    config.ema = ml_collections.ConfigDict(dict(decay=0.9999, tau=2000.0))
    config.loss = ml_collections.ConfigDict(DEFAULT_GAINS)   # box, cls, dfl gains (seg uses box's)

    config.eval = ml_collections.ConfigDict(dict(
        every_epochs=1, batch_size=16, conf_threshold=postprocess.CONF_THRESHOLD,
        iou_threshold=postprocess.IOU_THRESHOLD, max_det=postprocess.MAX_DET))
    config.checkpoint = ml_collections.ConfigDict(dict(every_epochs=1, keep_latest=2, async_save=True))
    return config
