"""The accelerator check in one command: does training and inference run well on this GPU/TPU?

    python benchmarks/accelerator.py [--size 640] [--batch 64] [--dtypes float32,bfloat16]
        [--steps 10] [--deploy_batches 1,32] [--out report.json]

Made to fit in about 8 minutes on one GPU at the defaults. Runs unchanged on CPU at smaller
sizes (e.g. --size 128 --batch 4 --deploy_batches 1,4). Reports, on all local devices:
  - per compute dtype: compile time of the train step, train images/s at --batch × --size, whether
    the same step run twice from the same state on the same batch gives bit-identical loss, and the
    compiled step's memory (arguments + temporaries, from XLA's memory analysis);
  - deploy-model latency (re-parameterised, float32) at each of --deploy_batches;
  - the device's peak memory in use, where the runtime reports it (GPU, TPU; not CPU).
No persistent compilation cache is used, so compile times are real.
"""
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from absl import flags

import train_step
from lmsfa_jax import LMSFA, cli, reparameterize
from lmsfa_jax.model import init_variables, jit_inference


def define_flags(flag_values):
    flags.DEFINE_integer("size", 640, "square image size", flag_values=flag_values)
    flags.DEFINE_integer("batch", 64, "global train batch (a multiple of the device count)",
                         flag_values=flag_values)
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "train compute dtypes", flag_values=flag_values)
    flags.DEFINE_integer("steps", 10, "timed train steps per dtype, after one warm-up", flag_values=flag_values)
    flags.DEFINE_list("deploy_batches", ["1", "32"], "deploy-model batch sizes to time", flag_values=flag_values)
    flags.DEFINE_integer("deploy_runs", 20, "timed deploy calls per batch size", flag_values=flag_values)
    flags.DEFINE_string("out", None, "also write the report as JSON here", flag_values=flag_values)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _memory_mb(compiled) -> float | None:
    """Arguments + temporaries of a compiled program (XLA's memory analysis), in MB."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes) / 2 ** 20


def train_report(size: int, batch: int, dtype: str, steps: int) -> dict:
    """Compile time, images/s, determinism and memory of the train step at `dtype`."""
    compiled, state, sharded, compile_s = train_step.compiled_step(size, batch, dtype)
    # The step donates its state: each of the two repeats gets its own copy.
    losses = [float(compiled(_copy(state), sharded)[1]["loss"]) for _ in range(2)]
    seconds, _, _ = train_step.time_steps(compiled, state, sharded, steps)
    return {"dtype": dtype, "compile_s": compile_s, "step_ms": 1e3 * seconds, "images_per_s": batch / seconds,
            "losses_of_one_step_twice": losses, "deterministic": losses[0] == losses[1],
            "step_memory_mb": _memory_mb(compiled)}


def deploy_report(size: int, batch_sizes: list[int], runs: int) -> list[dict]:
    """Median latency of the re-parameterised float32 model per batch size (one device)."""
    variables = jax.jit(reparameterize)(init_variables(LMSFA(num_classes=4)))
    apply = jit_inference(LMSFA(num_classes=4, deploy=True).apply)
    rows = []
    for b in batch_sizes:
        images = jax.random.uniform(jax.random.key(b), (b, size, size, 3))
        t0 = time.perf_counter()
        jax.block_until_ready(apply(variables, images))
        compile_s, times = time.perf_counter() - t0, []
        for _ in range(runs):
            t0 = time.perf_counter()
            jax.block_until_ready(apply(variables, images))
            times.append(time.perf_counter() - t0)
        ms = 1e3 * statistics.median(times)
        rows.append({"batch": b, "compile_s": compile_s, "latency_ms": ms, "images_per_s": 1e3 * b / ms})
    return rows


def peak_memory_mb() -> float | None:
    """The largest peak memory in use of the local devices, where the runtime reports it."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) / 2 ** 20 if peaks else None


def _mb(value) -> str:
    return "n/a" if value is None else f"{value:,.0f} MB"


def main(argv=None) -> dict:
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    device = jax.devices()[0]
    print(f"JAX {jax.__version__}, backend {jax.default_backend()}: {jax.device_count()} × {device.device_kind}",
          flush=True)
    report = {"backend": jax.default_backend(), "device_kind": device.device_kind,
              "device_count": jax.device_count(), "size": args.size, "batch": args.batch, "train": [],
              "deploy": []}
    print(f"\ntrain step, batch {args.batch} at {args.size}×{args.size}, {args.steps} timed steps")
    print(f"{'dtype':<10}{'compile s':>10}{'step ms':>10}{'img/s':>9}  {'same step twice':<26}{'step memory':>12}")
    for dtype in args.dtypes:
        r = train_report(args.size, args.batch, dtype, args.steps)
        report["train"].append(r)
        twice = "identical" if r["deterministic"] else "DIFFERENT {:.7g} vs {:.7g}".format(*r["losses_of_one_step_twice"])
        print(f"{dtype:<10}{r['compile_s']:>10.1f}{r['step_ms']:>10.1f}{r['images_per_s']:>9.1f}  {twice:<26}"
              f"{_mb(r['step_memory_mb']):>12}", flush=True)
    print(f"\ndeploy model (re-parameterised, float32) at {args.size}×{args.size}, medians of {args.deploy_runs}")
    print(f"{'batch':<8}{'compile s':>10}{'latency ms':>12}{'img/s':>9}")
    for r in deploy_report(args.size, [int(b) for b in args.deploy_batches], args.deploy_runs):
        report["deploy"].append(r)
        print(f"{r['batch']:<8}{r['compile_s']:>10.1f}{r['latency_ms']:>12.1f}{r['images_per_s']:>9.1f}", flush=True)
    report["peak_memory_mb"] = peak_memory_mb()
    print(f"\npeak device memory in use: {_mb(report['peak_memory_mb'])}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    cli.run(main)
