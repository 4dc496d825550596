"""Inference speed: training-form model (eval mode) vs re-parameterised deploy model, and the
two depthwise-convolution implementations, measured side by side in one run; then the exported
forms.

    python benchmarks/inference.py [--size 640] [--runs 30] [--impls lax,shift] [--noexported]
        [--only_exported] [--end_to_end] [--single_thread]

Per depthwise impl: compile time of each form, then the two forms are called alternately (so
drift in machine load hits both alike); prints the median batch-1 latency of each, their ratio
(the median of the per-pair ratios), and images/s at batch 8.

Exported forms (`lmsfa_jax.export`), batch 1, called round-robin: the JAX deploy model, its ONNX
export in ONNX Runtime's CPU provider (needs the export extra), its serialized StableHLO loaded
back, and, where the bench extra is installed, Ultralytics' fused PyTorch eager YOLOv8n-seg (the
issue-9 target: ONNX Runtime <= 0.5x of it). --end_to_end adds the end-to-end exports. Each row
shows the median latency and the median per-round ratio to the JAX deploy model; every runtime
uses all cores, and a 0.2 s pause before each call keeps the previous runtime's threads from
competing (ONNX Runtime runs without spinning threads).
"""
import importlib.util
import os
import pathlib
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import flags

from lmsfa_jax import LMSFA, cli, reparameterize
from lmsfa_jax.model import init_variables, jit_inference

SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def compare(forms: dict, images, runs: int, pause: float = 0.0) -> dict:
    """forms: name -> (jitted apply, variables). Alternating timed calls after warm-up ->
    name -> list of seconds. `pause` seconds between calls let one runtime's spinning worker
    threads go idle before the next runtime is timed."""
    for fn, variables in forms.values():
        for _ in range(2):
            seconds(fn, variables, images)
    times = {name: [] for name in forms}
    for _ in range(runs):
        for name, (fn, variables) in forms.items():
            time.sleep(pause)
            times[name].append(seconds(fn, variables, images))
    return times


def exported_forms(size: int, end_to_end: bool, threads: int) -> dict:
    """name -> batch-1 callable (images NHWC float32 numpy): JAX deploy and the exported forms."""
    from lmsfa_jax.evaluation import postprocess as pp  # pylint: disable=g-import-not-at-top
    from lmsfa_jax.export import signature, stablehlo  # pylint: disable=g-import-not-at-top
    variables = jax.jit(reparameterize)(init_variables(LMSFA(num_classes=4)))
    model = LMSFA(num_classes=4, deploy=True)
    settings = dict(conf_threshold=pp.DISPLAY_CONF_THRESHOLD, iou_threshold=pp.IOU_THRESHOLD,
                    max_det=pp.MAX_DET, max_candidates=pp.MAX_CANDIDATES)
    specs = {"": signature.ExportSpec(4, "n", (size, size))}
    if end_to_end:
        specs[" e2e"] = specs[""]._replace(postprocess=settings)
    deploy = jit_inference(model.apply)
    forms = {"jax deploy": lambda images: deploy(variables, images)}
    has_onnx = importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx")
    if not has_onnx:
        print("onnx / onnxruntime not installed (pip install 'lmsfa_jax[export]'): no ONNX Runtime rows")
    for suffix, spec in specs.items():
        if has_onnx:
            forms[f"onnxruntime{suffix}"] = _onnxruntime(variables, spec, threads)
        path = pathlib.Path(tempfile.mkdtemp()) / f"lmsfa{suffix.strip()}.stablehlo"
        path.write_bytes(stablehlo.serialize(signature.jax_function(model, variables, spec), spec, ["cpu"]))
        forms[f"stablehlo{suffix}"] = stablehlo.load_stablehlo(path)
    if importlib.util.find_spec("ultralytics"):
        forms["yolov8n-seg torch"] = _yolov8n_seg(threads)
    return forms


def _onnxruntime(variables, spec, threads: int):
    """The ONNX export of `spec` in an ONNX Runtime CPU session whose threads do not spin idle."""
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
    from lmsfa_jax.export import onnx_model  # pylint: disable=g-import-not-at-top
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_model.build(variables, spec).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images})


def _yolov8n_seg(threads: int):
    """Ultralytics' YOLOv8n-seg (random weights, from its YAML), fused, PyTorch eager, NCHW input."""
    import torch  # pylint: disable=g-import-not-at-top
    from ultralytics import YOLO  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)   # (Ultralytics sets OMP_NUM_THREADS to cores - 1)
    net = YOLO("yolov8n-seg.yaml").model.fuse(verbose=False).eval()

    def run(images):
        with torch.inference_mode():
            return net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    return run


def compare_exported(size: int, runs: int, end_to_end: bool, single_thread: bool) -> None:
    """Prints batch-1 latency of the exported forms side by side, with the ratio to JAX deploy."""
    forms = exported_forms(size, end_to_end, 1 if single_thread else os.cpu_count())
    images = np.asarray(jax.random.uniform(jax.random.key(2), (1, size, size, 3)))
    times = compare({name: (lambda _, x, fn=fn: fn(x), None) for name, fn in forms.items()}, images, runs,
                    pause=0.2)
    base = times["jax deploy"]
    print(f"\nexported forms, {size}×{size} batch 1, {'1 thread' if single_thread else 'all cores'}, medians "
          f"of {runs} round-robin runs (ratio: median per-round time / jax deploy's)")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, base))
        print(f"{name:<22}{1e3 * statistics.median(t):>9.1f} ms{ratio:>8.2f}×", flush=True)
    if "yolov8n-seg torch" in times and "onnxruntime" in times:
        ratio = statistics.median(a / b for a, b in zip(times["onnxruntime"], times["yolov8n-seg torch"]))
        print(f"onnxruntime / yolov8n-seg torch: {ratio:.2f}× (target <= 0.5)")


def define_flags(flag_values):
    flags.DEFINE_integer("size", 640, "square image size", flag_values=flag_values)
    flags.DEFINE_integer("runs", 30, "alternating timed runs per form", flag_values=flag_values)
    flags.DEFINE_integer("batch", 8, "batch size of the throughput column", flag_values=flag_values)
    flags.DEFINE_list("impls", ["lax", "shift"], "depthwise implementations", flag_values=flag_values)
    flags.DEFINE_bool("exported", True, "also compare the exported forms (ONNX Runtime, StableHLO)",
                      flag_values=flag_values)
    flags.DEFINE_bool("only_exported", False, "only the exported forms", flag_values=flag_values)
    flags.DEFINE_bool("end_to_end", False, "exported forms with post-processing too", flag_values=flag_values)
    flags.DEFINE_bool("single_thread", False, "every form on one thread (steadier on a busy machine)",
                      flag_values=flag_values)


def main(argv=None):
    args = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    if args.single_thread:  # read when JAX starts its CPU backend, i.e. at the first computation
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), SINGLE_THREAD_XLA_FLAGS])
    if args.only_exported:
        compare_exported(args.size, args.runs, args.end_to_end, args.single_thread)
        return
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.size}×{args.size}, "
          f"batch-1 medians of {args.runs} alternating runs after warm-up")
    variables = init_variables(LMSFA(num_classes=4))
    deploy_variables = jax.jit(reparameterize)(variables)
    one = jax.random.uniform(jax.random.key(0), (1, args.size, args.size, 3))
    many = jax.random.uniform(jax.random.key(1), (args.batch, args.size, args.size, 3))
    print(f"{'depthwise':<10}{'form':<8}{'compile s':>10}{'b1 ms':>9}{f'b{args.batch} img/s':>12}")
    deploy_ms = {}
    for impl in args.impls:
        forms, compile_s = {}, {}
        for form, deploy, v in (("train", False, variables), ("deploy", True, deploy_variables)):
            fn = jit_inference(LMSFA(num_classes=4, deploy=deploy, depthwise_impl=impl).apply)  # once per shape
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
    if args.exported:
        compare_exported(args.size, args.runs, args.end_to_end, args.single_thread)


if __name__ == "__main__":
    cli.run(main)
