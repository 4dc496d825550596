"""Transparent huge pages for XLA:CPU's large host buffers: when the tunable is added, that a
training command re-executes itself with it (arguments kept), and that it removes the page faults."""
import os
import pathlib
import subprocess
import sys

import pytest

from lmsfa_jax import host_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
APPLIES_HERE = host_memory.huge_pages_environment({}) is not None


@pytest.mark.parametrize("text, mode", [("always [madvise] never\n", "madvise"),
                                        ("[always] madvise never\n", "always"),
                                        ("always madvise [never]\n", "never"), ("garbled\n", None)])
def test_thp_mode_reads_the_bracketed_mode(tmp_path, text, mode):
    path = tmp_path / "enabled"
    path.write_text(text)
    assert host_memory.thp_mode(str(path)) == mode
    assert host_memory.thp_mode(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("mode, glibc, tunables, expected", [
    ("madvise", (2, 36), None, "glibc.malloc.hugetlb=1"),
    ("madvise", (2, 35), "glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("madvise", (2, 36), "glibc.malloc.hugetlb=0", None),      # the user's choice stands
    ("madvise", (2, 34), None, None),                           # glibc without the tunable
    ("always", (2, 36), None, None),                            # huge pages already
    ("never", (2, 36), None, None),
    (None, None, None, None),                                   # not Linux/glibc
])
def test_tunable_is_added_only_where_it_changes_something(monkeypatch, mode, glibc, tunables, expected):
    monkeypatch.setattr(host_memory, "thp_mode", lambda: mode)
    monkeypatch.setattr(host_memory, "glibc_version", lambda: glibc)
    monkeypatch.setattr(host_memory.sys, "platform", "linux")
    environ = {"PATH": "/bin"} if tunables is None else {"PATH": "/bin", "GLIBC_TUNABLES": tunables}
    result = host_memory.huge_pages_environment(environ)
    if expected is None:
        assert result is None
    else:
        assert result == {"PATH": "/bin", "GLIBC_TUNABLES": expected}


def _command(huge_pages: bool, environ: dict, *args):
    code = ("import os, sys; from lmsfa_jax import cli, host_memory; "
            "cli.run(lambda argv: print(os.environ.get('GLIBC_TUNABLES'), host_memory.huge_pages_enabled(), "
            f"argv), huge_pages={huge_pages})")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=120, check=True).stdout.strip()


def test_a_training_command_reexecutes_itself_with_the_tunable_and_its_arguments():
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = _command(True, environ, "--workdir", "a b", "--config.seed=3")
    if APPLIES_HERE:
        assert out == "glibc.malloc.hugetlb=1 True ['--workdir', 'a b', '--config.seed=3']"
    else:   # nothing to gain here: the process runs as it started
        assert out.startswith("None ") and out.endswith("['--workdir', 'a b', '--config.seed=3']")
    assert _command(False, environ).startswith("None ")                       # other commands: as started
    kept = _command(True, {**environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert kept.startswith("glibc.malloc.hugetlb=0 False")                   # the user's setting stands


_FAULTS = """
import resource, jax, jax.numpy as jnp
f = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(jnp.cos(x) * x) ** 2)))
x = jnp.ones((128, 512, 512))   # 128 MiB: each call writes its gradient to a fresh buffer that size
jax.block_until_ready(f(x))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    jax.block_until_ready(f(x))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


@pytest.mark.skipif(not APPLIES_HERE, reason="needs glibc 2.35+ and the kernel's THP mode 'madvise'")
def test_huge_pages_remove_the_page_faults_of_xla_buffers():
    def faults(tunable):
        environ = {**os.environ, "GLIBC_TUNABLES": f"glibc.malloc.hugetlb={tunable}"}
        return int(subprocess.run([sys.executable, "-c", _FAULTS], env=environ, capture_output=True, text=True,
                                  timeout=120, check=True).stdout)

    with_4k_pages, with_huge_pages = faults(0), faults(1)
    assert with_4k_pages > 30_000              # 128 MiB faulted in 4 KiB at a time: 32,768 faults
    assert with_huge_pages < with_4k_pages / 10
