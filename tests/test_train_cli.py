"""train.py's command line: a misspelt config override and an unbuilt dataset give one-line errors."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _train(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_unknown_config_override_is_a_clear_error(tmp_path):
    result = _train("--config", "configs/synthetic.py", "--workdir", str(tmp_path), "--config.epochz=3")
    assert result.returncode != 0
    assert "unknown config override 'epochz'" in result.stderr and 'Did you mean "epochs"' in result.stderr
    assert "Traceback" not in result.stderr


def test_unbuilt_peld_names_the_build_command(tmp_path):
    result = _train("--config", "configs/peld.py", "--workdir", str(tmp_path / "run"),
                    f"--config.data.data_dir={tmp_path / 'tfds'}")
    assert result.returncode != 0
    assert "'peld' is not built" in result.stderr and "lmsfa_jax.build_dataset" in result.stderr
    assert "Traceback" not in result.stderr
