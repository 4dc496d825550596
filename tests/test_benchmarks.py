"""The benchmarks run: the accelerator check at a tiny size on CPU, the checkpoint save timing, the
XLA op profile of a small program, and the Ultralytics comparison's message when its extra is missing
and the order of its calls."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import accelerator  # noqa: E402
import checkpoint  # noqa: E402
import vs_ultralytics  # noqa: E402
import xla_profile  # noqa: E402


def test_accelerator_check_reports_every_figure(tmp_path):
    out = tmp_path / "report.json"
    report = accelerator.main(["--size=64", "--batch=2", "--dtypes=float32", "--steps=1",
                               "--deploy_batches=1,2", "--deploy_runs=2", f"--out={out}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    (train,) = report["train"]
    assert train["deterministic"] and len(set(train["losses_of_one_step_twice"])) == 1
    assert train["compile_s"] > 0 and train["images_per_s"] > 0 and train["step_memory_mb"] > 0
    assert [r["batch"] for r in report["deploy"]] == [1, 2]
    assert all(r["latency_ms"] > 0 for r in report["deploy"])
    assert report["backend"] == "cpu" and report["peak_memory_mb"] is None  # CPU reports no peak


def test_checkpoint_benchmark_times_both_formats(tmp_path):
    results = checkpoint.main(["--saves=1", f"--workdir={tmp_path / 'scratch'}"])
    assert sorted(results) == ["flat (one array per dtype)", "one array per leaf"]
    assert all(wall > 0 and cpu > 0 for wall, cpu in results.values())
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


def test_xla_profile_attributes_op_time_to_the_code():
    def program(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y).sum()

    x, w = jnp.ones((2, 32, 32, 8)), jnp.ones((3, 3, 8, 16))
    compiled = jax.jit(jax.grad(program, argnums=1)).lower(x, w).compile()
    costs = xla_profile.profile(compiled, x, w, calls=2)
    assert costs.micros and all(us >= 0 for us in costs.micros.values())
    kinds = {costs.kind[name] for name in costs.micros}
    assert kinds & {"conv forward", "conv weight-grad", "conv input-grad"}, kinds
    table = xla_profile.format_top(costs, 5)
    assert len(table.splitlines()) == 1 + min(5, len(costs.micros))
    assert "%" in xla_profile.format_kinds(costs)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="the bench extra is installed")
def test_vs_ultralytics_without_the_bench_extra_says_how_to_install_it():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "vs_ultralytics.py"), "--sizes=64"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: No module named 'torch'")
    assert "pip install -e '.[bench]'" in run.stderr


def test_vs_ultralytics_times_each_call_right_after_an_untimed_one_of_its_own(monkeypatch):
    monkeypatch.setattr(vs_ultralytics, "PAUSE_S", 0.0)
    calls = []
    durations = iter([0.01, 0.02, 0.03, 0.04])   # the timed calls' lengths, in turn
    monkeypatch.setattr(vs_ultralytics, "seconds", lambda fn: (fn(), next(durations))[1])
    times = vs_ultralytics.alternate({"ours": lambda: calls.append("ours"),
                                      "theirs": lambda: calls.append("theirs")}, runs=2)
    assert calls == ["ours", "ours", "theirs", "theirs"] * 2
    assert times == {"ours": [0.01, 0.03], "theirs": [0.02, 0.04]}
