"""evaluate.py on a randomly initialised model and a tiny synthetic dataset writes every file."""
import json
import sys

import cv2
import numpy as np

from lmsfa_jax.data import synthetic

CONFIG = """
import ml_collections

def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 2
    config.model = ml_collections.ConfigDict(dict(num_classes=4, scale="n", depthwise_impl="auto"))
    config.data = ml_collections.ConfigDict(dict(name={name!r}, data_dir={data_dir!r}, image_size=64))
    return config
"""


def test_evaluate_random_init_model_writes_every_file(tmp_path, capsys):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    import evaluate  # the top-level CLI module
    name, data_dir = synthetic.ensure_synthetic_dataset(tmp_path / "data", num_train=1, num_val=3, size=96)
    config = tmp_path / "config.py"
    config.write_text(CONFIG.format(name=name, data_dir=data_dir))
    workdir = tmp_path / "run"
    report = evaluate.main(["--config", str(config), "--workdir", str(workdir), "--split", "val",
                            "--save-vis", "2", "--random-init"])
    out = workdir / "eval_val"
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert metrics["num_images"] == 3 and metrics["num_instances"] > 0
    for kind in ("bbox", "segm"):
        assert 0.0 <= metrics[kind]["AP"] <= 1.0 and 0.0 <= metrics[kind]["mAP50-95"] <= 1.0
    assert set(metrics["speed_ms_per_image"]) == {"preprocess", "inference", "postprocess"}
    assert len(predictions) == len(report.results) > 0  # conf 0.001 keeps random detections
    first = predictions[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert first["segmentation"]["size"] == [96, 96]
    for png in ("pr_bbox.png", "pr_segm.png"):
        assert cv2.imread(str(out / png)) is not None
    overlays = sorted(out.glob("vis_*.png"))
    assert len(overlays) == 2 and all(cv2.imread(str(p)).shape == (96, 96, 3) for p in overlays)
    printed = capsys.readouterr().out
    assert "Mask mAP50-95" in printed and "ms inference" in printed
    assert np.isfinite([metrics["segm"]["AR100"]]).all()


def test_predict_folder_and_video(tmp_path, capsys):
    from lmsfa_jax import predict
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {"seed": 0, "batch_size": 2, "model": {"num_classes": 4, "scale": "n", "depthwise_impl": "auto"},
              "data": {"name": "not_built", "data_dir": str(tmp_path / "none"), "image_size": 64}}
    (workdir / "config.json").write_text(json.dumps(config))  # as training saves it
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (80, 120, 3)), ("b.jpg", (64, 64, 3))):
        cv2.imwrite(str(images / name), rng.integers(0, 255, shape, dtype=np.uint8))
    records = predict.main(["--workdir", str(workdir), "--source", str(images), "--conf", "0.001",
                            "--random-init"])
    out = workdir / "predict"
    assert [r["source"] for r in records] == ["a.png", "b.jpg"]
    assert cv2.imread(str(out / "a_pred.png")).shape == (80, 120, 3)
    saved = json.loads((out / "instances.json").read_text())
    instance = saved[0]["instances"][0]
    assert set(instance) == {"class", "class_id", "score", "box", "rle"}
    assert instance["class"] == f"class{instance['class_id']}" and instance["rle"]["size"] == [80, 120]
    assert "FPS" in capsys.readouterr().out

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 72))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
    writer.release()
    records = predict.main(["--workdir", str(workdir), "--source", str(video), "--out",
                            str(tmp_path / "video_out"), "--random-init"])
    assert [r["frame"] for r in records] == [0, 1, 2]
    capture = cv2.VideoCapture(str(tmp_path / "video_out" / "clip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
