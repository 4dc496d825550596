"""The authors' PELD run: 640 px, 100 epochs, batch 8, SGD, mosaic throughout (close_mosaic 0),
4 classes, everything else at the Ultralytics defaults (lmsfa_jax/training/config.py).

    python train.py --config configs/peld.py --workdir runs/peld \
        --config.data.data_dir=~/tensorflow_datasets

PELD must be built first (see the README); to start from COCO-pretrained YOLOv8n-seg weights as the
authors did, add --config.init_from=yolov8n-seg.npz (or .pt).
"""
from lmsfa_jax.training.config import default_config


def get_config():
    config = default_config()
    config.batch_size = 8
    config.epochs = 100
    config.model.num_classes = 4
    config.data.name = "peld"
    config.data.image_size = 640
    config.data.mosaic = 1.0
    config.data.close_mosaic = 0
    config.data.num_workers = 4
    config.optimizer.name = "sgd"
    return config
