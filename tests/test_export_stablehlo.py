"""StableHLO export (jax.export) of a trained-like run, 64×96 input, dynamic batch (run at 4): the
artefact equals the JAX deploy model, also in a process that imports no lmsfa_jax code; the
end-to-end artefact, run through predict's runtime, equals `postprocess`."""
import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

import export_run
from lmsfa_jax import predict
from lmsfa_jax.errors import InputError
from lmsfa_jax.export import __main__ as export_cli
from lmsfa_jax.export import load_stablehlo, runtime
from lmsfa_jax.reparam import reparameterize

HW = (64, 96)

# Runs an artefact with JAX alone: `python -c CODE ARTEFACT IMAGES.npy OUT.npz`.
PLAIN_JAX = """
import sys
import cv2
import jax
import numpy as np
exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
outputs = jax.jit(exported.call)(np.load(sys.argv[2]))
assert not [m for m in sys.modules if m.startswith("lmsfa_jax")]
np.savez(sys.argv[3], **jax.device_get(outputs))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run's workdir, 4 test images and the JAX deploy model's outputs on them."""
    workdir = tmp_path_factory.mktemp("export_stablehlo") / "run"
    deploy_variables = reparameterize(export_run.make_run(workdir))
    images = export_run.test_images(4, HW)
    return workdir, images, export_run.deploy_outputs(deploy_variables, images)


def test_stablehlo_artefact_equals_jax_deploy_without_model_code(run, tmp_path):
    workdir, images, expected = run
    path = export_cli.main(["--workdir", str(workdir), "--format", "stablehlo", "--image_size", "64,96",
                            "--batch", "dynamic", "--platforms", "cpu,cuda"])
    metadata = json.loads((path.parent / (path.name + ".json")).read_text())
    assert metadata["image_size"] == [64, 96] and metadata["batch"] == "batch"
    assert metadata["class_names"] == export_run.CLASS_NAMES and metadata["source"]["step"] == export_run.STEP
    assert metadata["platforms"] == ["cpu", "cuda"] and metadata["outputs"][1]["shape"] == ["batch", 16, 24, 32]
    export_run.assert_outputs_close(load_stablehlo(path)(images), expected)

    np.save(tmp_path / "images.npy", images)
    cache = {"JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}  # the compilation above, reused
    subprocess.run([sys.executable, "-c", PLAIN_JAX, str(path), str(tmp_path / "images.npy"),
                    str(tmp_path / "out.npz")], check=True, env={**os.environ, **cache})
    with np.load(tmp_path / "out.npz") as plain:
        export_run.assert_outputs_close(dict(plain), expected)


def test_end_to_end_stablehlo_equals_postprocess(run, tmp_path):
    """The end-to-end artefact, run as predict runs it (`runtime.load` + `runtime.detector`),
    returns postprocess's detections; predict refuses it for this run (64×64) with a clear error."""
    workdir, images, reference = run
    settings = dict(conf_threshold=0.85, iou_threshold=0.3, max_det=40)   # as the ONNX test: shared compile
    path = export_cli.main(["--workdir", str(workdir), "--format", "stablehlo", "--end_to_end", "--conf", "0.85",
                            "--config.eval.iou_threshold=0.3", "--config.eval.max_det=40", "--image_size", "64,96",
                            "--batch", "dynamic", "--platforms", "cpu"])
    assert path.name == "lmsfa_n_64x96_e2e_dynamic.stablehlo"
    model = runtime.load(path, "stablehlo")
    assert model.metadata["postprocess"]["conf_threshold"] == 0.85 and model.metadata["end_to_end"]
    detections = runtime.detector(model)(images)
    expected = export_run.postprocess(reference["decoded"], reference["protos"], **settings)
    assert np.all(expected.count >= 5)
    export_run.assert_same_detections(detections._asdict(), expected, HW)

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), (images[1] * 255).astype(np.uint8))
    with pytest.raises(InputError, match="takes 64×96 images.*export with --image_size 64"):
        predict.main(["--workdir", str(workdir), "--source", str(image), "--backend", "stablehlo", "--model", str(path)])
    (tmp_path / "bad.stablehlo").write_bytes(b"not flatbuffers")
    (tmp_path / "bad.stablehlo.json").write_text(path.with_name(path.name + ".json").read_text())
    with pytest.raises(InputError, match="not a serialized StableHLO"):
        runtime.load(tmp_path / "bad.stablehlo", "stablehlo")
    with pytest.raises(InputError, match="bad.onnx.json not found"):
        (tmp_path / "bad.onnx").write_bytes(b"")
        runtime.load(tmp_path / "bad.onnx", "stablehlo")
