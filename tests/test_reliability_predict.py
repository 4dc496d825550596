"""Issue 10, category 12: predict over a folder skips and reports unreadable files and finishes the
rest; a lone unreadable image or a folder of nothing readable is a one-line error."""
import json

import cv2
import numpy as np
import pytest

from lmsfa_jax import predict
from lmsfa_jax.errors import InputError


@pytest.fixture
def workdir(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()  # the config of test_predict_folder_and_video (its compiled model is cached)
    config = {"seed": 0, "batch_size": 2, "model": {"num_classes": 4, "scale": "n", "depthwise_impl": "auto"},
              "data": {"name": "not_built", "data_dir": str(tmp_path / "none"), "image_size": 64}}
    (workdir / "config.json").write_text(json.dumps(config))
    return workdir


def _predict(workdir, source):
    return predict.main(["--workdir", str(workdir), "--source", str(source), "--random_init"])


def test_unreadable_files_are_skipped_and_reported(tmp_path, workdir, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "b_good.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    (images / "a_random_bytes.png").write_bytes(rng.bytes(200))
    (images / "c_empty.jpg").write_bytes(b"")
    (images / "d_folder.png").mkdir()
    cv2.imwrite(str(images / "e_good.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))

    records = _predict(workdir, images)
    assert [r["source"] for r in records] == ["b_good.png", "e_good.jpg"]
    assert [r["source"] for r in json.loads((workdir / "predict" / "instances.json").read_text())] == \
        ["b_good.png", "e_good.jpg"]
    err = capsys.readouterr().err
    for name in ("a_random_bytes.png", "c_empty.jpg", "d_folder.png"):
        assert f"warning: skipped {images / name}: " in err
    assert "3 unreadable file(s) skipped: a_random_bytes.png, c_empty.jpg, d_folder.png" in err


def test_nothing_readable_is_a_one_line_error(tmp_path, workdir):
    lone = tmp_path / "lone.png"
    lone.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match=f"^cannot read image {lone}: cannot decode image bytes$"):
        _predict(workdir, lone)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(InputError, match=f"^no image or frame of {folder} could be read; 1 unreadable file"):
        _predict(workdir, folder)
    assert not (workdir / "predict" / "instances.json").exists()
