"""ONNX export of a trained-like run (randomised weights and BatchNorm statistics), 64×96 input:
ONNX Runtime equals the JAX deploy model; the end-to-end graph equals `postprocess`; the file
passes onnx.checker and carries the metadata; predict runs it; bad input fails in one line."""
import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import export_run
from lmsfa_jax import LMSFA, predict, reparameterize
from lmsfa_jax.errors import InputError
from lmsfa_jax.evaluation import postprocess as pp
from lmsfa_jax.export import __main__ as export_cli
from lmsfa_jax.export import onnx_postprocess
from lmsfa_jax.export.onnx_graph import Graph, tensor_info
from lmsfa_jax.export.signature import OPSET

HW = (64, 96)
E2E = dict(conf_threshold=0.85, iou_threshold=0.3, max_det=40)   # some NMS, fewer than max_det


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run's workdir, its deploy variables, 4 test images and the deploy model's outputs on them."""
    workdir = tmp_path_factory.mktemp("export_onnx") / "run"
    deploy_variables = reparameterize(export_run.make_run(workdir))
    images = export_run.test_images(4, HW)
    return workdir, deploy_variables, images, export_run.deploy_outputs(deploy_variables, images)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, images) -> dict:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": images})))


def test_onnx_runtime_equals_jax_deploy_at_batch_1_and_4(run, capsys):
    workdir, _, images, expected = run
    path = export_cli.main(["--workdir", str(workdir), "--format", "onnx", "--image_size", "64,96",
                            "--batch", "dynamic"])
    assert path == workdir / "export" / "lmsfa_n_64x96_dynamic.onnx"
    assert "step 7" in capsys.readouterr().out
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET
    metadata = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert metadata["class_names"] == export_run.CLASS_NAMES and metadata["image_size"] == [64, 96]
    assert metadata["source"]["step"] == export_run.STEP and metadata["source"]["checkpoint"] == "best"
    assert metadata["letterbox"]["pad_value"] == 114 and metadata["end_to_end"] is False
    assert [o["name"] for o in metadata["outputs"]] == ["decoded", "protos"]
    assert metadata["outputs"][0]["shape"] == ["batch", 8 * 12 + 4 * 6 + 2 * 3, 4 + 4 + 32]

    session = _session(path)
    for batch in (1, 4):
        export_run.assert_outputs_close(_run(session, images[:batch]), {k: v[:batch] for k, v in expected.items()})


def test_end_to_end_onnx_equals_postprocess(run):
    workdir, _, images, reference = run
    path = export_cli.main(["--workdir", str(workdir), "--format", "onnx", "--image_size", "64,96",
                            "--batch", "dynamic", "--end_to_end", f"--conf={E2E['conf_threshold']}",
                            f"--config.eval.iou_threshold={E2E['iou_threshold']}",
                            f"--config.eval.max_det={E2E['max_det']}"])
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert metadata["postprocess"] == dict(E2E, max_candidates=pp.MAX_CANDIDATES, multi_label=False)
    expected = export_run.postprocess(reference["decoded"], reference["protos"], **E2E)
    candidates = np.sum(reference["decoded"][..., 4:8].max(-1) > E2E["conf_threshold"], axis=1)
    assert np.all(expected.count >= 5) and np.sum(expected.count) < np.sum(candidates)  # NMS at work
    export_run.assert_same_detections(_run(_session(path), images), expected, HW)


@pytest.mark.parametrize("num_anchors,max_det,conf", [(126, 300, 0.001), (400, 50, 0.01)])
def test_postprocess_graph_is_exact_on_the_same_input(num_anchors, max_det, conf):
    """Crowded random candidates (most overlap, NMS suppresses many), fewer or more than max_det:
    the ONNX post-processing returns exactly what `postprocess` returns."""
    rng = np.random.default_rng(num_anchors)
    nc, (h, w) = 4, (16, 24)
    decoded = np.concatenate([rng.uniform(20, 60, (2, num_anchors, 2)), rng.uniform(10, 40, (2, num_anchors, 2)),
                              rng.random((2, num_anchors, nc)) ** 3, rng.normal(size=(2, num_anchors, 32))],
                             axis=-1).astype(np.float32)
    protos = rng.normal(size=(2, h, w, 32)).astype(np.float32)
    g = Graph("postprocess")
    names = onnx_postprocess.postprocess(g, "decoded", "protos", num_classes=nc, num_anchors=num_anchors,
                                         proto_hw=(h, w), conf_threshold=conf, iou_threshold=0.7, max_det=max_det)
    types = {"classes": "int32", "count": "int32", "masks": "bool"}
    model = g.model([tensor_info("decoded", "float32", ["b", num_anchors, 4 + nc + 32]),
                     tensor_info("protos", "float32", ["b", h, w, 32])],
                    [tensor_info(n, types.get(n, "float32"), None) for n in names])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    actual = dict(zip(names, session.run(names, {"decoded": decoded, "protos": protos})))
    expected = export_run.postprocess(decoded, protos, conf_threshold=conf, iou_threshold=0.7, max_det=max_det)
    survivors = int(np.sum(expected.count))
    assert 0 < survivors < np.sum(decoded[..., 4:4 + nc].max(-1) > conf)  # NMS removed some
    for name in names:
        np.testing.assert_array_equal(actual[name], getattr(expected, name), err_msg=name)


def test_predict_with_onnxruntime_backend_equals_jax_deploy(run, tmp_path):
    """predict --backend onnxruntime --model FILE gives the instances that predict's own pipeline
    (letterbox, postprocess, mapping back) gives with the JAX deploy model."""
    workdir, deploy_variables, _, _ = run
    model = export_cli.main(["--workdir", str(workdir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.random.default_rng(3).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    common = ["--workdir", str(workdir), "--source", str(images), "--conf", "0.5"]
    from_onnx = predict.main(common + ["--out", str(tmp_path / "ort"), "--backend", "onnxruntime", "--model", str(model)])
    (tmp_path / "jax").mkdir()
    detect = predict.jax_detector(LMSFA(num_classes=4, deploy=True).apply, deploy_variables, conf_threshold=0.5,
                                  iou_threshold=pp.IOU_THRESHOLD, max_det=pp.MAX_DET)
    from_jax, _ = predict.predict(detect, predict.iter_frames(images), export_run.CLASS_NAMES,
                                  export_run.IMAGE_SIZE, tmp_path / "jax")
    jax_instances, onnx_instances = from_jax[0]["instances"], from_onnx[0]["instances"]
    assert len(onnx_instances) == len(jax_instances) > 0
    for a, b in zip(sorted(onnx_instances, key=lambda i: -i["score"]), sorted(jax_instances, key=lambda i: -i["score"])):
        assert a["class"] == b["class"] and abs(a["score"] - b["score"]) < 1e-4
        np.testing.assert_allclose(a["box"], b["box"], atol=0.05)
    assert cv2.imread(str(tmp_path / "ort" / "a_pred.png")).shape == (48, 80, 3)

    with pytest.raises(InputError, match="data.image_size is 96"):   # the file takes 64×64
        predict.main(common + ["--backend", "onnxruntime", "--model", str(model), "--config.data.image_size=96"])
    with pytest.raises(InputError, match="model.num_classes is 3"):
        predict.main(common + ["--backend", "onnxruntime", "--model", str(model), "--config.model.num_classes=3"])


def test_bad_export_input_is_named(run, tmp_path, monkeypatch):
    workdir = run[0]
    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    (empty / "config.json").write_text((workdir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        export_cli.main(["--workdir", str(empty), "--format", "onnx"])
    with pytest.raises(export_cli.cli.UsageError, match="multiples of 32"):
        export_cli.main(["--workdir", str(workdir), "--format", "onnx", "--image_size", "64,100"])
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the export extra were not installed
    with pytest.raises(InputError, match=r"pip install 'lmsfa_jax\[export\]'"):
        export_cli.main(["--workdir", str(workdir), "--format", "onnx"])
    monkeypatch.undo()

    result = subprocess.run([sys.executable, "-m", "lmsfa_jax.export", "--workdir", str(workdir), "--format", "tflite"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert "error:" in result.stderr and "onnx" in result.stderr and "stablehlo" in result.stderr
