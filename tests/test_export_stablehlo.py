"""StableHLO export (jax.export) of a trained-like run: the 64×96 dynamic-batch artefact equals
the JAX deploy model at batch 4, also in a process that imports no lmsfa_jax code; the end-to-end
artefact equals `postprocess`; predict runs it."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import export_run
from lmsfa_jax import predict
from lmsfa_jax.errors import InputError
from lmsfa_jax.export import __main__ as export_cli
from lmsfa_jax.export import load_stablehlo
from lmsfa_jax.reparam import reparameterize

HW = (64, 96)

# Runs an artefact with JAX alone: `python -c CODE ARTEFACT IMAGES.npy OUT.npz`.
PLAIN_JAX = """
import sys
import jax
import numpy as np
exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
outputs = jax.jit(exported.call)(np.load(sys.argv[2]))
assert not [m for m in sys.modules if m.startswith("lmsfa_jax")]
np.savez(sys.argv[3], **jax.device_get(outputs))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run's workdir, its deploy variables, 4 test images and the deploy model's outputs on them."""
    workdir = tmp_path_factory.mktemp("export_stablehlo") / "run"
    deploy_variables = reparameterize(export_run.make_run(workdir))
    images = export_run.test_images(4, HW)
    return workdir, deploy_variables, images, export_run.deploy_outputs(deploy_variables, images)


def test_stablehlo_artefact_equals_jax_deploy_without_model_code(run, tmp_path):
    workdir, _, images, expected = run
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


def test_end_to_end_stablehlo_equals_postprocess_and_runs_in_predict(run, tmp_path):
    workdir, deploy_variables, images, _ = run
    settings = dict(conf_threshold=0.85, iou_threshold=0.3, max_det=40)
    path = export_cli.main(["--workdir", str(workdir), "--format", "stablehlo", "--end_to_end", "--conf", "0.85",
                            "--config.eval.iou_threshold=0.3", "--config.eval.max_det=40", "--platforms", "cpu"])
    assert path.name == "lmsfa_n_64x64_e2e.stablehlo"  # the run's square size
    square = np.ascontiguousarray(images[:1, :, :64])   # the run's 64×64 input
    outputs = load_stablehlo(path)(square)
    square_reference = export_run.deploy_outputs(deploy_variables, square)
    expected = export_run.postprocess(square_reference["decoded"], square_reference["protos"], **settings)
    assert int(expected.count[0]) >= 3
    export_run.assert_same_detections(outputs, expected, (64, 64))

    image = tmp_path / "a.png"
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.imwrite(str(image), (images[1] * 255).astype(np.uint8))
    records = predict.main(["--workdir", str(workdir), "--source", str(image), "--out", str(tmp_path / "p"),
                            "--backend", "stablehlo", "--model", str(path)])
    assert records[0]["instances"] and all(i["score"] > 0.85 for i in records[0]["instances"])
    with pytest.raises(export_cli.cli.UsageError, match="threshold 0.85 built in"):
        predict.main(["--workdir", str(workdir), "--source", str(image), "--backend", "stablehlo",
                      "--model", str(path), "--conf", "0.5"])
    with pytest.raises(InputError, match="not a serialized StableHLO"):
        (tmp_path / "bad.stablehlo").write_bytes(b"not flatbuffers")
        (tmp_path / "bad.stablehlo.json").write_text(path.with_name(path.name + ".json").read_text())
        predict.main(["--workdir", str(workdir), "--source", str(image), "--backend", "stablehlo",
                      "--model", str(tmp_path / "bad.stablehlo")])
