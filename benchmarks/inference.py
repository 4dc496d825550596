"""Inference speed: training-form model (eval mode) vs re-parameterised deploy model, and the
two depthwise-convolution implementations, measured side by side in one run.

    python benchmarks/inference.py [--size 640] [--runs 20] [--impls lax,shift]

Prints, per depthwise impl: compile time, median batch-1 latency of each form and their ratio,
and images/s at batch 8.
"""
import argparse
import statistics
import time

import jax

from lmsfa_jax import LMSFA, reparameterize
from lmsfa_jax.model import init_variables


def timed_calls(fn, args, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return times


def measure(model: LMSFA, variables, size: int, runs: int, batch: int) -> dict:
    infer = jax.jit(model.apply)     # one compilation per input shape, reused by every call
    x1 = jax.random.uniform(jax.random.key(0), (1, size, size, 3))
    xb = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
    t0 = time.perf_counter()
    jax.block_until_ready(infer(variables, x1))
    compile_s = time.perf_counter() - t0
    timed_calls(infer, (variables, x1), 2)                       # warm-up
    latency = statistics.median(timed_calls(infer, (variables, x1), runs))
    jax.block_until_ready(infer(variables, xb))                  # compile + warm the batch shape
    batch_s = statistics.median(timed_calls(infer, (variables, xb), max(3, runs // 4)))
    return dict(compile_s=compile_s, latency_ms=1e3 * latency, images_per_s=batch / batch_s)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--impls", default="lax,shift")
    args = parser.parse_args()
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.size}×{args.size}, "
          f"median of {args.runs} runs after warm-up")
    base = LMSFA(num_classes=4)
    variables = init_variables(base)
    deploy_variables = jax.jit(reparameterize)(variables)
    header = f"{'depthwise':<10}{'form':<9}{'compile s':>10}{'b1 ms':>10}{f'b{args.batch} img/s':>12}"
    print(header)
    latencies = {}
    for impl in args.impls.split(","):
        for form, deploy, v in (("train", False, variables), ("deploy", True, deploy_variables)):
            r = measure(LMSFA(num_classes=4, deploy=deploy, depthwise_impl=impl), v, args.size,
                        args.runs, args.batch)
            latencies[impl, form] = r["latency_ms"]
            print(f"{impl:<10}{form:<9}{r['compile_s']:>10.2f}{r['latency_ms']:>10.1f}{r['images_per_s']:>12.2f}",
                  flush=True)
        print(f"{impl:<10}deploy speed-up at batch 1: "
              f"{latencies[impl, 'train'] / latencies[impl, 'deploy']:.2f}× (train ms / deploy ms)")
    impls = args.impls.split(",")
    if len(impls) == 2:
        a, b = impls
        print(f"depthwise {b} vs {a} (deploy, batch 1): "
              f"{latencies[a, 'deploy'] / latencies[b, 'deploy']:.2f}× ({a} ms / {b} ms)")


if __name__ == "__main__":
    main()
