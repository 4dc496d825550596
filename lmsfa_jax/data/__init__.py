"""Data: PELD and custom datasets in TFDS (no TensorFlow), a synthetic stand-in, the input pipeline.

Building (see README):
  python -m lmsfa_jax.build_dataset --source DIR_OR_ARCHIVE --name NAME --data_dir DATA_DIR [--overwrite]
  build.build_dataset(source, name, data_dir, class_names=None, overwrite=False)
      -> (tfds builder, report.BuildReport); a changed source raises report.SourceError (one line)
  sources / yolo_source / coco_source / archives / polygons: reading YOLO-seg and COCO folders/archives
  peld.Builder                       the registered "peld" TFDS builder (manual_dir download)
  synthetic.write_dataset(out, {"train": n, "val": m}, size, seed, layout="yolo"|"coco")
  synthetic.ensure_synthetic_dataset(workdir, num_train, num_val, size, seed) -> (name, data_dir)

Reading raw examples (evaluation):
  reader.open_split(name, data_dir, split) -> SplitReader: len(), [i] -> example dict
      image (H, W, 3) uint8 RGB, file_name, image_id, height, width, patient_id, frame_id,
      labels (K,) int32, boxes (K, 4) xyxy original pixels, is_crowd (K,), polygons (K lists of (P, 2))
  reader.class_names(name, data_dir); reader.DatasetNotBuiltError (names the build command)

Batches (training and evaluation):
  pipeline.InputPipeline(config.data, split, batch_size, train, seed, total_epochs, num_workers, rows)
      .epoch(epoch) -> iterator of batch dicts, len() batches per epoch, .close()
      (rows: the part of each batch one process of a multi-process run builds)
  pipeline.batch_iterator(config.data, split, batch_size, seed, epoch, train) -> (iterator, num_batches)
  transforms.letterbox(image, size) -> (image_lb, r, (pad_x, pad_y))
"""
