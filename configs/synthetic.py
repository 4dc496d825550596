"""A few-minute CPU run on a small synthetic PELD stand-in, generated into the workdir.

    python train.py --config configs/synthetic.py --workdir runs/synthetic

Small images and dataset, AdamW without gradient accumulation and a short warm-up, so that it
learns visibly in a few minutes on two CPU cores. Scale it up with overrides, e.g.
--config.synthetic.num_train=256 --config.data.image_size=320 --config.synthetic.size=320.
"""
from lmsfa_jax.training.config import default_config


def get_config():
    config = default_config()
    config.synthetic.enabled = True
    config.synthetic.num_train = 32
    config.synthetic.num_val = 8
    config.synthetic.size = 128
    config.data.image_size = 128
    config.data.max_instances = 16
    config.data.mosaic = 0.0
    config.data.close_mosaic = 0
    config.data.num_workers = 1   # augment in a worker process, beside the train step (+15 % images/s on 2 cores)
    config.batch_size = 8
    config.epochs = 40
    config.optimizer.name = "adamw"
    config.optimizer.lr0 = 0.002
    config.optimizer.momentum = 0.9
    config.optimizer.nominal_batch_size = 8   # no gradient accumulation
    config.optimizer.warmup_epochs = 1.0
    config.optimizer.warmup_min_steps = 0
    config.eval.every_epochs = 10
    config.eval.batch_size = 8
    config.checkpoint.every_epochs = 5
    return config
