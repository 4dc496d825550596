"""Inference speed: training-form model (eval mode) vs re-parameterised deploy model, and the
two depthwise-convolution implementations, measured side by side in one run.

    python benchmarks/inference.py [--size 640] [--runs 30] [--impls lax,shift]

Per depthwise impl: compile time of each form, then the two forms are called alternately (so
drift in machine load hits both alike); prints the median batch-1 latency of each, their ratio
(the median of the per-pair ratios), and images/s at batch 8.
"""
import argparse
import statistics
import time

import jax

from lmsfa_jax import LMSFA, reparameterize
from lmsfa_jax.model import init_variables


def seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def compare(forms: dict, images, runs: int) -> dict:
    """forms: name -> (jitted apply, variables). Alternating timed calls after warm-up ->
    name -> list of seconds."""
    for fn, variables in forms.values():
        for _ in range(2):
            seconds(fn, variables, images)
    times = {name: [] for name in forms}
    for _ in range(runs):
        for name, (fn, variables) in forms.items():
            times[name].append(seconds(fn, variables, images))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--impls", default="lax,shift")
    args = parser.parse_args()
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.size}×{args.size}, "
          f"batch-1 medians of {args.runs} alternating runs after warm-up")
    variables = init_variables(LMSFA(num_classes=4))
    deploy_variables = jax.jit(reparameterize)(variables)
    one = jax.random.uniform(jax.random.key(0), (1, args.size, args.size, 3))
    many = jax.random.uniform(jax.random.key(1), (args.batch, args.size, args.size, 3))
    print(f"{'depthwise':<10}{'form':<8}{'compile s':>10}{'b1 ms':>9}{f'b{args.batch} img/s':>12}")
    deploy_ms = {}
    for impl in args.impls.split(","):
        forms, compile_s = {}, {}
        for form, deploy, v in (("train", False, variables), ("deploy", True, deploy_variables)):
            fn = jax.jit(LMSFA(num_classes=4, deploy=deploy, depthwise_impl=impl).apply)  # once per shape
            compile_s[form] = seconds(fn, v, one)
            forms[form] = (fn, v)
        b1 = compare(forms, one, args.runs)
        b8 = compare(forms, many, max(3, args.runs // 6))
        for form in forms:
            print(f"{impl:<10}{form:<8}{compile_s[form]:>10.2f}{1e3 * statistics.median(b1[form]):>9.1f}"
                  f"{args.batch / statistics.median(b8[form]):>12.2f}", flush=True)
        ratio = statistics.median(t / d for t, d in zip(b1["train"], b1["deploy"]))
        print(f"{impl:<10}deploy speed-up at batch 1: {ratio:.3f}× (median of train/deploy per pair)")
        deploy_ms[impl] = 1e3 * statistics.median(b1["deploy"])
    if len(deploy_ms) == 2:
        (a, ms_a), (b, ms_b) = deploy_ms.items()
        print(f"depthwise {b} vs {a} (deploy, batch 1): {ms_a / ms_b:.2f}× ({a} ms / {b} ms)")


if __name__ == "__main__":
    main()
