"""The one command-line convention of every lmsfa_jax command (absl flags).

Commands that work on a training run take

  --workdir DIR        the run directory;
  --config FILE        a Python config file (`configs/*.py`, `get_config()`; `FILE:arg` passes an
                       argument) or a run's saved `config.json`, laid over the defaults
                       (`lmsfa_jax.config_file`); then `--config.<field>=<value>` overrides any field.

`train` needs `--config`; `evaluate`, `predict` and `export` default it to `WORKDIR/config.json`.
Flag names use underscores (`--save_vis`); the hyphenated spellings of earlier releases
(`--save-vis`) still work, with a deprecation warning. Each command is `python -m lmsfa_jax.<command>`
and a console script `lmsfa-<command>` (`train.py` and `evaluate.py` at the top level too):

    def define_flags(flag_values):
        flags.DEFINE_string("split", "val", "dataset split", flag_values=flag_values)

    def main(argv=None):
        args = cli.parse(argv, __doc__, define_flags, config=cli.RUN_CONFIG)
        args.config, args.workdir, args.split

    if __name__ == "__main__":
        cli.run(main)

`train` and `evaluate` also run as one process of several (`parse(..., distributed=True)`, see
`lmsfa_jax.distributed`): `--distributed=auto|yes|no`, `--coordinator_address HOST:PORT`,
`--num_processes N`, `--process_id I` and `--distributed_timeout SECONDS`; `parse` connects the
processes before JAX starts.

`train` and `benchmarks/train_step.py` first re-execute themselves once so that XLA:CPU's large
buffers get transparent huge pages (`lmsfa_jax.host_memory`; `cli.run(main, huge_pages=True)`).

Flags are parsed into a fresh `FlagValues` on every call, so `main(argv)` can be called repeatedly
(tests do). `cli.run` prints a user error (`UsageError`, `InputError`, a missing file) as one
line, `error: ...`, and exits with status 1.
"""
import os
import sys
from typing import Callable, Mapping, Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lmsfa_jax import config_file, host_memory
from lmsfa_jax.errors import InputError

NO_CONFIG, CONFIG_REQUIRED, RUN_CONFIG, OPTIONAL_CONFIG = None, "required", "run", "optional"
RUN_CONFIG_FILE = "config.json"   # what a training run saves in its workdir
DEFAULT_CACHE_DIR = "~/.cache/lmsfa_jax/xla"

_CONFIG_HELP = {
    CONFIG_REQUIRED: "--config FILE: a Python config file (configs/*.py) or a run's config.json (required)",
    RUN_CONFIG: "--config FILE: a Python config file or a run's config.json (default: WORKDIR/config.json)",
    OPTIONAL_CONFIG: "--config FILE: a Python config file or a run's config.json (default: the defaults)",
}


class UsageError(Exception):
    """A command line that cannot be run (unknown flag, missing value); printed as one line."""


USER_ERRORS = (UsageError, InputError, FileNotFoundError)


def parse(argv: Sequence[str] | None, doc: str, define_flags: Callable | None = None, *,
          config: str | None = NO_CONFIG, uses_jax: bool = True, distributed: bool = False,
          aliases: Mapping[str, str] | None = None) -> flags.FlagValues:
    """Parses `argv` (without the program name; default sys.argv[1:]) -> the flag values.

    define_flags(flag_values) defines the command's own flags. With `config`, `--workdir` is defined
    too and `.config` holds the loaded ConfigDict, its values checked (`training.config_checks`).
    `uses_jax` adds `--compilation_cache` and applies it. `distributed` adds the multi-process flags
    and starts the distributed runtime when they (or the environment) ask for it. `aliases` maps
    deprecated flag names to what replaces them, e.g. {"iou": "config.eval.iou_threshold"}.
    `-h`/`--help` prints `doc` and the flags, then exits.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    flag_values = flags.FlagValues()
    if config is not None:
        flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, outputs)",
                            flag_values=flag_values)
    if uses_jax:
        flags.DEFINE_string("compilation_cache", os.environ.get("LMSFA_JAX_CACHE_DIR", DEFAULT_CACHE_DIR),
                            "persistent XLA compilation cache directory ('' disables it)",
                            flag_values=flag_values)
    if distributed:
        _define_distributed_flags(flag_values)
    if define_flags is not None:
        define_flags(flag_values)
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(_help(doc, flag_values, config))
        raise SystemExit(0)
    argv = _apply_aliases(argv, flag_values, dict(aliases or {}))
    config_spec, argv = _pop_config(argv)
    if config is not None:
        config_spec = _config_spec(config, config_spec, argv)
        loaded = config_file.load(config_spec)
        try:  # defines a flag per --config.<field> override in argv
            config_flags.DEFINE_config_dict("config", loaded, "the run config", flag_values=flag_values,
                                            lock_config=True, sys_argv=["cli"] + argv)
        except (AttributeError, KeyError) as e:
            raise _unknown_override(e) from None
    elif config_spec is not None:
        raise UsageError("this command takes no --config")
    _parse_flags(flag_values, argv)
    if config in (CONFIG_REQUIRED, RUN_CONFIG) and not flag_values.workdir:
        raise UsageError("--workdir is required")
    if config is not None:
        from lmsfa_jax.training.config_checks import check_config  # pylint: disable=g-import-not-at-top
        check_config(flag_values.config)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and TFDS log every step at INFO
    if uses_jax and flag_values.compilation_cache:
        _use_compilation_cache(flag_values.compilation_cache)
    if distributed:
        from lmsfa_jax import distributed as distributed_lib  # pylint: disable=g-import-not-at-top
        distributed_lib.initialize(flag_values.distributed, flag_values.coordinator_address,
                                   flag_values.num_processes, flag_values.process_id,
                                   flag_values.distributed_timeout)
    return flag_values


def _define_distributed_flags(flag_values: flags.FlagValues) -> None:
    from lmsfa_jax import distributed as distributed_lib  # pylint: disable=g-import-not-at-top  (imports JAX)
    flags.DEFINE_enum("distributed", "auto", distributed_lib.MODES,
                      "one process of a multi-process run? auto: when the flags below, srun or mpirun say "
                      "so; yes: also on a TPU pod (JAX detects the rest)", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process runs)",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "this process's index, 0 .. num_processes - 1",
                         lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer("distributed_timeout", distributed_lib.DEFAULT_TIMEOUT_S,
                         "seconds before the others exit with an error when a process dies or stalls",
                         lower_bound=1, flag_values=flag_values)


def run(main: Callable, huge_pages: bool = False) -> None:
    """Runs `main(sys.argv[1:])`; a user error is printed as one line and exits with status 1.

    `huge_pages` (commands that train): first re-executes the process so that XLA:CPU's large
    buffers get transparent huge pages (`host_memory.reexec_with_huge_pages`)."""
    if huge_pages:
        host_memory.reexec_with_huge_pages()
    try:
        main(sys.argv[1:])
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")


def entry_point(main: Callable, huge_pages: bool = False) -> Callable[[], None]:
    """The zero-argument function a console script (`lmsfa-<command>`) calls: `run(main, huge_pages)`."""
    return lambda: run(main, huge_pages)


def _help(doc: str, flag_values: flags.FlagValues, config) -> str:
    lines = [doc.strip(), "", "flags:"]
    if config is not None:
        lines += [f"  {_CONFIG_HELP[config]}",
                  "  --config.<field>=<value>: override a config field (lmsfa_jax/training/config.py lists them)"]
    for flag in sorted(flag_values._flags().values(), key=lambda f: f.name):  # pylint: disable=protected-access
        if flag.name == "config":
            continue
        default = "" if flag.default is None else f" (default: {flag.default!r})"
        lines.append(f"  --{flag.name}: {flag.help}{default}")
    return "\n".join(lines)


def _apply_aliases(argv: list[str], flag_values: flags.FlagValues, aliases: dict) -> list[str]:
    """Rewrites hyphenated flag names (--save-vis) and `aliases` to today's names, with a warning."""
    known = set(flag_values)
    out = []
    for arg in argv:
        if arg.startswith("--") and not arg.startswith("--config"):
            name, sep, value = arg[2:].partition("=")
            new = aliases.get(name) or aliases.get(name.replace("-", "_"))
            if new is None and "-" in name and name.replace("-", "_") in known:
                new = name.replace("-", "_")
            if new is not None:
                print(f"warning: --{name} is deprecated; use --{new}", file=sys.stderr)
                arg = f"--{new}{sep}{value}"
        out.append(arg)
    return _join_values(out, aliases)


def _join_values(argv: list[str], aliases: dict) -> list[str]:
    """`--config.x VALUE` (an alias given with a space) -> `--config.x=VALUE`, as ml_collections needs."""
    targets = {f"--{v}" for v in aliases.values() if v.startswith("config.")}
    out, i = [], 0
    while i < len(argv):
        if argv[i] in targets and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Takes `--config FILE` / `--config=FILE` out of argv -> (FILE or None, the rest)."""
    spec, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-config"):
            if i + 1 >= len(argv):
                raise UsageError("--config needs a file")
            spec, i = argv[i + 1], i + 2
            continue
        if arg.startswith(("--config=", "-config=")):
            spec = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return spec, rest


def _config_spec(mode: str, spec: str | None, argv: list[str]) -> str:
    if spec is not None:
        return spec
    if mode == CONFIG_REQUIRED:
        raise UsageError("--config is required (e.g. --config configs/synthetic.py)")
    if mode == OPTIONAL_CONFIG:
        return ""
    workdir = _flag_value(argv, "workdir")
    if workdir is None:
        raise UsageError("--workdir is required")
    path = os.path.join(os.path.expanduser(workdir), RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        raise UsageError(f"{path} not found: is {workdir} a training run? Otherwise pass --config FILE")
    return path


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _parse_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
    try:
        unparsed = flag_values(["cli"] + argv)
    except flags.Error as e:
        raise UsageError(f"{e} (--help lists the flags)") from None
    except (AttributeError, KeyError) as e:
        raise _unknown_override(e) from None
    if len(unparsed) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(unparsed[1:])}")


def _unknown_override(error: Exception) -> UsageError:
    """ml_collections' error for a --config.<field> that does not exist, as one line."""
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]
    message = str(error.args[0] if error.args else error).replace("\n", "; ")
    return UsageError(f"unknown config override {message}")


def _use_compilation_cache(directory: str) -> None:
    import jax  # pylint: disable=g-import-not-at-top  (commands without JAX work stay light)
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def load_model(config, workdir, checkpoint: str = "best", random_init: bool = False):
    """-> (model, variables) for a command acting on a run: the EMA variables of `checkpoint`
    ('best', 'latest', a step or a path; see `training.checkpoints.restore_variables`), or freshly
    initialised ones with `random_init` (smoke tests)."""
    from lmsfa_jax.model import init_variables, model_from_config  # pylint: disable=g-import-not-at-top
    from lmsfa_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
    model = model_from_config(config)
    if random_init:
        return model, init_variables(model, config.seed)
    return model, checkpoints.restore_variables(workdir, checkpoint)
