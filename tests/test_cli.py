"""The one command-line convention: absl flags, --config (a Python file or a run's config.json)
with --config.<field> overrides, --workdir, deprecated hyphenated spellings, one-line errors."""
import importlib
import json
import pathlib
import subprocess
import sys

import pytest

from lmsfa_jax import cli, config_file
from lmsfa_jax.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = {"train": "lmsfa_jax.train", "evaluate": "lmsfa_jax.evaluate", "predict": "lmsfa_jax.predict",
            "summary": "lmsfa_jax.summary", "build_dataset": "lmsfa_jax.build_dataset",
            "make_synthetic": "lmsfa_jax.make_synthetic", "export": "lmsfa_jax.export.__main__"}
RUN_COMMANDS = ("train", "evaluate", "predict", "summary", "export")   # those that take --config


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_short_and_lists_every_flag(command, capsys):
    module = importlib.import_module(COMMANDS[command])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(module.__doc__.strip().splitlines()[0])
    assert len(text.splitlines()) < 45
    flag_values = cli.flags.FlagValues()
    if hasattr(module, "define_flags"):
        module.define_flags(flag_values)
    for name in flag_values:
        assert f"--{name}:" in text, name
    assert ("--config FILE" in text) == (command in RUN_COMMANDS)


def test_every_command_is_a_console_script():
    text = (ROOT / "pyproject.toml").read_text()
    for command, module in COMMANDS.items():
        assert f'lmsfa-{command.replace("_", "-")} = "{module}:cli_main"' in text


def _saved_run(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved = {"batch_size": 2, "model": {"num_classes": 3}, "data": {"image_size": 96, "class_names": ["a", "b", "c"]}}
    (workdir / cli.RUN_CONFIG_FILE).write_text(json.dumps(saved))
    return workdir


def test_a_run_config_defaults_to_the_workdirs_and_takes_overrides(tmp_path):
    workdir = _saved_run(tmp_path)
    args = cli.parse(["--workdir", str(workdir), "--config.eval.batch_size=4", "--config.model.scale", "s"],
                     "doc", config=cli.RUN_CONFIG, uses_jax=False)
    config = args.config
    assert (config.batch_size, config.model.num_classes, config.data.image_size) == (2, 3, 96)
    assert config.data.class_names == ("a", "b", "c")            # JSON list -> the tuple field
    assert (config.eval.batch_size, config.model.scale) == (4, "s")
    assert config.optimizer.name == "sgd"                       # unsaved fields keep the defaults
    explicit = cli.parse(["--workdir", str(tmp_path), "--config", str(workdir / "config.json")],
                         "doc", config=cli.RUN_CONFIG, uses_jax=False)
    assert explicit.config.data.image_size == 96


def test_python_config_with_argument(tmp_path):
    path = tmp_path / "sweep.py"
    path.write_text("from lmsfa_jax.training.config import default_config\n"
                    "def get_config(size='320'):\n    c = default_config()\n"
                    "    c.data.image_size = int(size)\n    return c\n")
    assert config_file.load(f"{path}:160").data.image_size == 160
    assert config_file.load(str(path)).data.image_size == 320


@pytest.mark.parametrize("saved, message", [
    ({"data": {"imag_size": 96}}, "unknown config field 'data.imag_size'"),
    ({"model": 4}, "'model' must be a group of fields"),
    ({"batch_size": "eight"}, "'batch_size'"),
])
def test_a_bad_config_file_names_the_field(tmp_path, saved, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(InputError, match=message):
        config_file.load(str(path))


def test_deprecated_hyphenated_flags_and_aliases_still_work(tmp_path, capsys):
    from lmsfa_jax import evaluate, predict
    workdir = _saved_run(tmp_path)
    args = cli.parse(["--workdir", str(workdir), "--save-vis", "3", "--random-init", "--batch-size", "8"],
                     "doc", evaluate.define_flags, config=cli.RUN_CONFIG, uses_jax=False,
                     aliases={"batch_size": "config.eval.batch_size"})
    assert (args.save_vis, args.random_init, args.config.eval.batch_size) == (3, True, 8)
    args = cli.parse(["--workdir", str(workdir), "--source", "x.png", "--iou=0.5", "--max-det", "20"],
                     "doc", predict.define_flags, config=cli.RUN_CONFIG, uses_jax=False,
                     aliases={"iou": "config.eval.iou_threshold", "max_det": "config.eval.max_det"})
    assert (args.config.eval.iou_threshold, args.config.eval.max_det) == (0.5, 20)
    warnings = capsys.readouterr().err
    assert "--save-vis is deprecated; use --save_vis" in warnings and "--iou is deprecated" in warnings


@pytest.mark.parametrize("argv, message", [
    (["--workdir", "{tmp}/nowhere"], "config.json not found"),
    (["--config", "{tmp}/missing.py", "--workdir", "{tmp}"], "config file not found"),
    (["--workdir", "{run}", "--config.epochz=3"], "unknown config override 'epochz'"),
    (["--workdir", "{run}", "--no_such_flag"], "no_such_flag"),
    (["--workdir", "{run}", "stray"], "unexpected arguments: stray"),
    (["--config", "{run}/config.json"], "--workdir is required"),
])
def test_bad_command_lines_are_one_line_errors(tmp_path, argv, message):
    run = _saved_run(tmp_path)
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    with pytest.raises(cli.USER_ERRORS, match=message):
        cli.parse(argv, "doc", config=cli.RUN_CONFIG, uses_jax=False)


def test_synthetic_data_and_build_commands_end_to_end(tmp_path):
    source, data_dir = tmp_path / "source", tmp_path / "tfds"
    made = _run("-m", "lmsfa_jax.make_synthetic", "--out", str(source), "--train", "2", "--val", "1",
                "--size", "64")
    assert made.returncode == 0, made.stderr
    assert (source / "data.yaml").is_file() and len(list((source / "images" / "train").iterdir())) == 2
    args = ["-m", "lmsfa_jax.build_dataset", "--source", str(source), "--name", "tiny", "--data_dir", str(data_dir)]
    built = _run(*args)
    assert built.returncode == 0, built.stderr
    assert "adipose tissue" in built.stdout and (data_dir / "tiny").is_dir()
    again = _run(*args)
    assert again.returncode == 0 and "reused" in again.stdout
    bad = _run("-m", "lmsfa_jax.build_dataset", "--source", str(source), "--name", "Bad-Name",
               "--data_dir", str(data_dir))
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    moved = _run("-m", "lmsfa_jax.data.build")
    assert moved.returncode == 1 and "python -m lmsfa_jax.build_dataset" in moved.stderr
