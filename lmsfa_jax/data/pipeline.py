"""Epochs of fixed-shape numpy batches from a TFDS split, augmented on host worker processes.

    pipeline = InputPipeline(config.data, "train", batch_size=16, train=True, seed=0, total_epochs=100)
    for batch in pipeline.epoch(epoch): ...      # len(pipeline) batches; pipeline.close() at the end

or, for one epoch, `batches, num_batches = batch_iterator(config.data, "val", 16, seed, epoch, train=False)`.

Batch dict (B = batch size, S = image_size, M = max_instances, r = mask_ratio):
  images       (B, S, S, 3) float32 in [0, 1]
  boxes        (B, M, 4) float32 xyxy in pixels of the S x S input
  labels       (B, M) int32;  valid (B, M) bool;  masks (B, M, S/r, S/r) uint8 0/1
  valid_image  (B,) bool     False for the padding that fills the last evaluation batch
  index        (B,) int32    position of the image in the split (`reader.open_split`), -1 for padding
  image_id     (B,) int64    the dataset's image id, -1 for padding (and for training mosaics: the first image)
  ratio        (B,) float32  letterbox scale r, pad (B, 2) float32 left/top pad: x_lb = x * r + pad_x
                             (evaluation batches; 1 and 0 for training batches)
Training: shuffled each epoch, Ultralytics augmentation (mosaic off for the last `close_mosaic` of
`total_epochs` epochs), last partial batch dropped. Evaluation: dataset order, letterbox only,
padded last batch. A batch is a pure function of (seed, epoch, batch index): identical for any
number of workers. Images with more than M objects keep their first M; the count is logged.

Multi-process runs: with `rows`, a pipeline builds only those rows of each batch (the process's
part of the global batch; B stays the global batch size, and so do the order and the number of
batches), so the processes read disjoint images and every row is what one process would make.
"""

import collections
import logging
import multiprocessing
import os

import cv2
import ml_collections
import numpy as np

from lmsfa_jax.data import augment
from lmsfa_jax.data import reader as reader_lib
from lmsfa_jax.errors import InputError

_PREFETCH_PER_WORKER = 2


def default_data_config() -> ml_collections.ConfigDict:
    """`config.data`: the dataset, the loader and the augmentation (Ultralytics defaults).

    The one definition of these fields; `training.config.default_config` uses it and
    `InputPipeline` reads them.
    """
    return ml_collections.ConfigDict(dict(
        name="peld",                # TFDS dataset name (`python -m lmsfa_jax.build_dataset --name`)
        data_dir="~/tensorflow_datasets",
        train_split="train",
        val_split="val",
        class_names=(),             # filled from the dataset when a run starts (saved in config.json)
        num_workers=0,              # augmenting worker processes (0: in the main process)
        cache_ram=False,            # keep decoded, resized images in memory
        image_size=640,             # square network input S (a multiple of 32)
        max_instances=64,           # M: objects kept per image (extra ones dropped, counted)
        mask_ratio=4,               # masks at S / mask_ratio (the prototype resolution)
        mosaic=1.0,                 # probability of a 4-image mosaic
        close_mosaic=10,            # no mosaic in the last epochs
        translate=0.1,              # random affine: fraction of S
        scale=0.5,                  # random affine: gain range 1 ± scale
        degrees=0.0,
        shear=0.0,
        hsv_h=0.015,                # HSV jitter gains
        hsv_s=0.7,
        hsv_v=0.4,
        fliplr=0.5,                 # horizontal flip probability
    ))


class BatchMaker:
    """Makes batch `b` of an epoch in whatever process holds it (a worker or the main process)."""

    def __init__(
        self,
        name: str,
        data_dir: str,
        split: str,
        batch_size: int,
        train: bool,
        cfg: ml_collections.ConfigDict,
        cache_ram: bool,
        rows: range | None = None,
    ):
        self.reader = reader_lib.open_split(name, data_dir, split)
        self.batch_size, self.train, self.cfg, self.cache_ram = batch_size, train, cfg, cache_ram
        self.rows = range(batch_size) if rows is None else rows
        self._cache = {}

    def __len__(self):
        return len(self.reader)

    def load_resized(self, index: int) -> dict:
        """Decoded sample with long side = image_size (kept in RAM when cache_ram)."""
        if index in self._cache:
            return self._cache[index]
        example = self.reader[index]
        sample = augment.resize_sample(
            {"image": example["image"], "labels": example["labels"], "polygons": example["polygons"]},
            self.cfg.image_size,
        )
        if self.cache_ram:
            self._cache[index] = sample
        return sample

    def order(self, seed: int, epoch: int) -> np.ndarray:
        if not self.train:
            return np.arange(len(self))
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def make(self, seed: int, epoch: int, batch_index: int, use_mosaic: bool) -> tuple[dict, int]:
        """-> (`rows` of the batch, uint8 images; number of objects dropped beyond max_instances)."""
        order = self.order(seed, epoch)
        positions = [batch_index * self.batch_size + row for row in self.rows]
        rows, dropped = [], 0
        for position in positions:
            if position >= len(order):
                rows.append(self._padding())
                continue
            index = int(order[position])
            if self.train:
                rng = np.random.default_rng([seed, epoch, position, 1])
                sample = augment.train_sample(self.load_resized, index, len(self), rng, self.cfg, use_mosaic)
                ratio, pad = 1.0, (0, 0)
            else:
                example = self.reader[index]
                sample, ratio, pad = augment.letterbox_sample(example, self.cfg.image_size)
            targets, n_dropped = augment.to_targets(sample, self.cfg.max_instances, self.cfg.mask_ratio)
            dropped += n_dropped
            image_id = int(self.reader.record(index)["image_id"]) if self.train else example["image_id"]
            rows.append(
                {
                    "images": sample["image"],
                    **targets,
                    "valid_image": True,
                    "index": index,
                    "image_id": image_id,
                    "ratio": ratio,
                    "pad": pad,
                }
            )
        return _stack(rows), dropped

    def _padding(self) -> dict:
        s, m, r = self.cfg.image_size, self.cfg.max_instances, self.cfg.mask_ratio
        return {
            "images": np.zeros((s, s, 3), np.uint8),
            "boxes": np.zeros((m, 4), np.float32),
            "labels": np.zeros((m,), np.int32),
            "valid": np.zeros((m,), bool),
            "masks": np.zeros((m, s // r, s // r), np.uint8),
            "valid_image": False,
            "index": -1,
            "image_id": -1,
            "ratio": 1.0,
            "pad": (0, 0),
        }


_DTYPES = {
    "valid_image": np.bool_,
    "index": np.int32,
    "image_id": np.int64,
    "ratio": np.float32,
    "pad": np.float32,
}


def _stack(rows: list[dict]) -> dict:
    return {key: np.stack([np.asarray(row[key], _DTYPES.get(key)) for row in rows]) for key in rows[0]}


def _pack_masks(batch: dict) -> dict:
    """Keeps only the masks of valid objects (most of the (B, M, ...) array is padding) for the trip home."""
    packed = dict(batch)
    packed["masks"] = batch["masks"][batch["valid"]]
    return packed


def _unpack_masks(packed: dict) -> dict:
    batch = dict(packed)
    valid = packed["valid"]
    batch["masks"] = np.zeros(valid.shape + packed["masks"].shape[1:], np.uint8)
    batch["masks"][valid] = packed["masks"]
    return batch


_WORKER_MAKER = None


def _init_worker(args):
    global _WORKER_MAKER
    cv2.setNumThreads(1)  # parallelism comes from the worker processes; OpenCV threads would oversubscribe
    _WORKER_MAKER = BatchMaker(*args)


def _make_in_worker(task):
    batch, dropped = _WORKER_MAKER.make(*task)
    return _pack_masks(batch), dropped


class InputPipeline:
    """Epoch iterator over a split; `num_workers` > 0 uses a pool of spawned processes (kept across epochs).

    data_config: `config.data`, with every field of `default_data_config`. rows: the rows of each
    batch to build (default all; a multi-process run's share, see the module docstring).
    """

    def __init__(
        self,
        data_config,
        split: str,
        batch_size: int,
        train: bool,
        seed: int = 0,
        total_epochs: int | None = None,
        num_workers: int | None = None,
        rows: range | None = None,
    ):
        self.cfg = data_config
        self.seed, self.train, self.total_epochs, self.batch_size = seed, train, total_epochs, batch_size
        self.num_workers = data_config.num_workers if num_workers is None else num_workers
        self._maker_args = (
            data_config.name,
            os.path.expanduser(data_config.data_dir),
            split,
            batch_size,
            train,
            data_config,
            data_config.cache_ram,
            rows,
        )
        self._maker = BatchMaker(*self._maker_args)
        num_images = len(self._maker)
        self.num_batches = num_images // batch_size if train else -(-num_images // batch_size)
        if self.num_batches == 0:
            raise InputError(
                f"split {split!r} of {data_config['name']!r} has {num_images} images, not enough "
                f"for one batch of {batch_size} (config.batch_size)"
            )
        self.class_names = self._maker.reader.class_names
        self.dropped_instances = collections.Counter()  # epoch -> objects dropped beyond max_instances
        self._pool = None

    def __len__(self):
        return self.num_batches

    def mosaic_on(self, epoch: int) -> bool:
        if not self.train or self.cfg.mosaic <= 0:
            return False
        return self.total_epochs is None or epoch < self.total_epochs - self.cfg.close_mosaic

    def epoch(self, epoch: int):
        """Yields the `num_batches` batch dicts of an epoch (see the module docstring)."""
        tasks = [(self.seed, epoch, b, self.mosaic_on(epoch)) for b in range(self.num_batches)]
        if self.num_workers == 0:
            results = (self._maker.make(*task) for task in tasks)
        else:
            results = self._pooled(tasks)
        for batch, dropped in results:
            if dropped:
                if not self.dropped_instances[epoch]:
                    logging.warning(
                        "images with more than max_instances=%d objects: extra objects dropped "
                        "(raise config.data.max_instances)",
                        self.cfg.max_instances,
                    )
                self.dropped_instances[epoch] += dropped
            batch["images"] = np.multiply(batch["images"], np.float32(1 / 255), dtype=np.float32)
            yield batch
        if self.dropped_instances[epoch]:
            logging.warning(
                "epoch %d: %d objects beyond max_instances=%d were dropped",
                epoch,
                self.dropped_instances[epoch],
                self.cfg.max_instances,
            )

    def _pooled(self, tasks):
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(
                self.num_workers, initializer=_init_worker, initargs=(self._maker_args,)
            )
        pending = collections.deque()
        tasks = iter(tasks)
        for task in tasks:
            pending.append(self._pool.apply_async(_make_in_worker, (task,)))
            if len(pending) >= _PREFETCH_PER_WORKER * self.num_workers:
                break
        while pending:
            packed, dropped = pending.popleft().get()
            task = next(tasks, None)
            if task is not None:
                pending.append(self._pool.apply_async(_make_in_worker, (task,)))
            yield _unpack_masks(packed), dropped

    def close(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def batch_iterator(
    data_config,
    split: str,
    batch_size: int,
    seed: int,
    epoch: int,
    train: bool,
    total_epochs: int | None = None,
    num_workers: int | None = None,
):
    """One epoch -> (iterator of batch dicts, number of batches). Worker processes end with the iterator."""
    pipeline = InputPipeline(data_config, split, batch_size, train, seed, total_epochs, num_workers)

    def batches():
        with pipeline:
            yield from pipeline.epoch(epoch)

    return batches(), pipeline.num_batches
