"""Loads the file given to `--config`: a Python config file or a run's saved config.json.

    load("configs/peld.py")            # get_config() of a Python config file
    load("configs/sweep.py:small")     # get_config("small")
    load("runs/peld/config.json")      # what a training run saved
    load("")                           # the defaults alone

Either way the values are laid over `training.config.default_config()`, so a config that sets
only some fields (or a run saved before a field existed) gets today's defaults for the rest, and
a field that does not exist is an `InputError` naming it. `lmsfa_jax.cli` loads `--config` with
it, then applies the `--config.<field>=<value>` overrides.
"""
import importlib.util
import json
import pathlib

import ml_collections

from lmsfa_jax.errors import InputError
from lmsfa_jax.training.config import default_config


def load(spec: str = "") -> ml_collections.ConfigDict:
    """The config named by `spec` (see the module docstring), over the defaults, unlocked."""
    config = default_config()
    if not spec:
        return config
    path, _, argument = spec.partition(":") if not spec.endswith(".json") else (spec, "", "")
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    if path.suffix == ".json":
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not a valid JSON config ({e})") from None
    else:
        values = _python_config(path, argument)
    overlay(config, values, str(path))
    return config


def _python_config(path: pathlib.Path, argument: str):
    spec = importlib.util.spec_from_file_location(f"lmsfa_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: not a Python config file (.py with get_config()) or a run's config.json")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise InputError(f"{path}: defines no get_config()")
    return module.get_config(*([argument] if argument else []))


def overlay(config: ml_collections.ConfigDict, values, where: str, prefix: str = "") -> None:
    """Sets `values` (a ConfigDict or nested dict) onto `config` in place, field by field.

    A field `config` lacks is an InputError naming `where` and the field. JSON lists become
    tuples where the default is a tuple."""
    items = values.items() if hasattr(values, "items") else []
    for key, value in items:
        name = f"{prefix}{key}"
        if key not in config:
            raise InputError(f"{where}: unknown config field {name!r}")
        current = config[key]
        if isinstance(current, ml_collections.ConfigDict):
            if not hasattr(value, "items"):
                raise InputError(f"{where}: config field {name!r} must be a group of fields, got {value!r}")
            overlay(current, value, where, prefix=f"{name}.")
            continue
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            config[key] = value
        except TypeError as e:
            raise InputError(f"{where}: config field {name!r}: {e}") from None
