"""Issue 10, categories 8 and 9: invalid config numbers are named before anything heavy starts, and
a model whose class count does not match the dataset's is an error (fewer) or a warning (more)."""
import importlib.util
import pathlib

import pytest

from lmsfa_jax import evaluate
from lmsfa_jax.errors import InputError
from lmsfa_jax.training import checkpoints
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import loop
from lmsfa_jax.training.config_checks import config_problems

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(**fields):
    config = config_lib.default_config()
    config.batch_size = 1
    config.synthetic.update(enabled=True, num_train=4, num_val=2, size=64)
    config.data.update(image_size=64, max_instances=8, mosaic=0.0, close_mosaic=0)
    for dotted, value in fields.items():
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


@pytest.mark.parametrize("field, value, expected", [
    ("batch_size", 0, "config.batch_size=0 must be an integer >= 1"),
    ("batch_size", -4, "config.batch_size=-4 must be an integer >= 1"),
    ("epochs", 0, "config.epochs=0 must be an integer >= 1"),
    ("data.image_size", 100,
     "config.data.image_size=100 must be a multiple of 32 (the largest stride), e.g. 96 or 128"),
    ("data.max_instances", 0, "config.data.max_instances=0 must be an integer >= 1"),
    ("eval.every_epochs", -1, "config.eval.every_epochs=-1 must be an integer >= 0"),
    ("eval.batch_size", 0, "config.eval.batch_size=0 must be an integer >= 1"),
    ("eval.iou_threshold", 1.5, "config.eval.iou_threshold=1.5 must be a finite number >= 0 and <= 1"),
    ("optimizer.lr0", float("nan"), "config.optimizer.lr0=nan must be a finite number > 0"),
    ("optimizer.momentum", 1.0, "config.optimizer.momentum=1.0 must be a finite number >= 0 and < 1"),
    ("checkpoint.keep_latest", 0, "config.checkpoint.keep_latest=0 must be an integer >= 1"),
    ("max_consecutive_nonfinite", 0, "config.max_consecutive_nonfinite=0 must be an integer >= 1"),
])
def test_invalid_number_is_named_before_anything_starts(tmp_path, field, value, expected):
    with pytest.raises(InputError) as error:
        loop.train_and_evaluate(_config(**{field: value}), tmp_path)
    assert str(error.value) == f"invalid config: {expected}"
    assert list(tmp_path.iterdir()) == []  # no data built, no config.json, no checkpoints


def test_every_invalid_field_is_named_at_once_and_commands_check_too(tmp_path):
    problems = config_problems(_config(batch_size=0, **{"data.image_size": 100}))
    assert [p.split("=")[0] for p in problems] == ["config.batch_size", "config.data.image_size"]
    checkpoints.write_config(config_lib.default_config(), tmp_path)  # a run's config.json
    with pytest.raises(InputError, match=r"^invalid config: config\.eval\.batch_size=0 must be"):
        evaluate.main(["--workdir", str(tmp_path), "--config.eval.batch_size=0"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.name)
def test_shipped_configs_and_defaults_are_valid(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert config_problems(module.get_config()) == []
    assert config_problems(config_lib.default_config()) == []


def test_model_with_more_classes_than_the_dataset_warns(capsys):
    config = _config(**{"model.num_classes": 6})
    loop.record_class_names(config, ["fat", "bone", "ligament", "nerve"])
    warning = capsys.readouterr().err
    assert warning.startswith("warning: config.model.num_classes=6 but dataset")
    assert "4 classes" in warning and "--config.model.num_classes=4" in warning
    assert config.data.class_names == ("fat", "bone", "ligament", "nerve")


def test_model_with_fewer_classes_than_the_dataset_stops_before_the_first_step(tmp_path, capsys):
    with pytest.raises(InputError, match=r"config\.model\.num_classes=2 but dataset .* has 4 classes"):
        loop.train_and_evaluate(_config(**{"model.num_classes": 2}), tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
    capsys.readouterr()
    loop.record_class_names(_config(), ["fat", "bone", "ligament", "nerve"])  # equal: silent
    assert capsys.readouterr().err == ""
