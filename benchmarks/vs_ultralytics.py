"""lmsfa_jax against Ultralytics YOLOv8n-seg (PyTorch) on this machine, side by side in one process.

    pip install -e '.[bench]'          # torch + ultralytics, for this benchmark only
    python benchmarks/vs_ultralytics.py [--sizes 640,320] [--batch 8] [--objects 20] [--runs 5]
        [--max_instances 64,256] [--inference_size 640] [--threads N] [--profile 25]

Both run on the same random batch (`--objects` objects per image). For each size, the two
contenders' calls alternate (so drift in machine load hits both; each timed call right after an
untimed one of the same contender, as a training loop's steps follow each) and each line reports the
medians and the median of the per-pair time ratios (ours / theirs):
  model forward+backward   sum of squares of the raw train-mode outputs, no loss; also timed for
                           LMSF-A itself in PyTorch (benchmarks/lmsfa_torch.py, checked against
                           ../shared/golden first), which tells the network's cost from the framework's
  loss forward, fwd+bwd    our segmentation_loss vs Ultralytics' v8SegmentationLoss (per-instance
                           masks), on fixed head outputs; fwd+bwd differentiates the head outputs
  train step               forward, loss, backward and an SGD step every iteration (Ultralytics:
                           Nesterov SGD with gradient clipping, as its trainer)
then our loss fwd+bwd as a share of our model fwd+bwd, our train step with `max_instances`
256 against 64 (same objects), batch-1 inference at --inference_size (our re-parameterised
deploy model against Ultralytics' fused eager model), and the costliest XLA ops of our train step.
Ultralytics' model is built from yolov8n-seg.yaml (nc=4), without downloading weights. Like `train`,
it re-executes itself with huge pages for large host buffers (`lmsfa_jax.host_memory`), which hold
for both contenders; its first line says whether they are on.
"""
import copy
import os
import statistics
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import batches
import xla_profile
from lmsfa_jax import cli, host_memory, reparameterize
from lmsfa_jax.errors import InputError
from lmsfa_jax.losses import segmentation_loss
from lmsfa_jax.model import cpu_compiler_options, init_variables, jit_inference, model_from_config
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import optimizer as optimizer_lib
from lmsfa_jax.training import state as state_lib
from lmsfa_jax.training import step as step_lib

INSTALL_HINT = ("this benchmark needs PyTorch and Ultralytics: pip install -e '.[bench]' "
                "(or pip install torch ultralytics)")


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


PAUSE_S = 0.5  # idle time before each contender's turn: XLA's worker threads spin on after a JAX call


def alternate(contenders: dict, runs: int) -> dict:
    """name -> zero-argument callable (blocking). `runs` rounds in which each contender in turn, after a
    pause that lets the other runtime's threads go idle (without it PyTorch's times on 2 cores come
    out several times too long), makes an untimed call and then the timed one -> name -> seconds.

    The untimed call puts each timed one where a training loop's step is: right after its own
    previous call. Host memory that a process has freed and left unused for a few seconds costs much
    more to fault in again on the 2-core CPU machine (our model's forward+backward at batch 8, 640 px:
    6.4 s after 9 s idle, 4.0 s after 0.5 s, kernel time 4.6 against 0.5 s), and XLA:CPU frees its
    multi-GB buffers after every call, while PyTorch's allocator keeps them: timed right after the
    other contender's turn, ours paid for the pause and theirs did not."""
    times = {name: [] for name in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            time.sleep(PAUSE_S)
            fn()
            times[name].append(seconds(fn))
    return times


def ratio(ours: list, theirs: list) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs))


class Ours:
    """Our jitted model fwd+bwd, loss and train step for one batch (state kept across calls)."""

    def __init__(self, batch: dict, max_instances: int):
        config = config_lib.default_config()
        config.batch_size = batch["images"].shape[0]
        config.data.max_instances = max_instances
        config.optimizer.update(name="sgd", nominal_batch_size=config.batch_size, warmup_epochs=0.0)
        self.model = model_from_config(config)
        variables = init_variables(self.model, 0)
        self.params, self.batch_stats = variables["params"], variables["batch_stats"]
        mesh = step_lib.make_mesh()
        self.batch = step_lib.shard_batch(batch, mesh)
        tx = optimizer_lib.make_optimizer(config)
        schedule = optimizer_lib.Schedule.from_config(config, steps_per_epoch=100)
        self.state = step_lib.replicate(state_lib.create_train_state(variables, tx), mesh)  # new buffers
        self.compile_s = {}
        start = time.perf_counter()
        self.step_fn = step_lib.make_train_step(self.model, tx, schedule, config, mesh).lower(
            self.state, self.batch).compile()
        self.compile_s["train step"] = time.perf_counter() - start

    def _outputs(self, params):
        (feats, coef, protos), _ = self.model.apply(
            {"params": params, "batch_stats": self.batch_stats}, self.batch["images"], train=True,
            mutable=["batch_stats"])
        return feats, coef, protos

    def compile_model_and_loss(self):
        def sum_of_squares(params):
            feats, coef, protos = self._outputs(params)
            return sum(jnp.sum(f ** 2) for f in feats) + jnp.sum(coef ** 2) + jnp.sum(protos ** 2)

        training = cpu_compiler_options("training")   # as the train step compiles
        start = time.perf_counter()
        self.model_fb = jax.jit(jax.grad(sum_of_squares), compiler_options=training).lower(self.params).compile()
        self.compile_s["model fwd+bwd"] = time.perf_counter() - start
        self.outputs = jax.jit(self._outputs)(self.params)
        targets = {k: self.batch[k] for k in ("boxes", "labels", "valid", "masks")}
        loss = lambda outs: segmentation_loss(*outs, targets, self.model.num_classes)[0]  # noqa: E731
        start = time.perf_counter()
        self.loss_f = jax.jit(loss, compiler_options=training).lower(self.outputs).compile()
        self.loss_fb = jax.jit(jax.grad(loss), compiler_options=training).lower(self.outputs).compile()
        self.compile_s["loss"] = time.perf_counter() - start

    def run_model_fb(self):
        jax.block_until_ready(self.model_fb(self.params))

    def run_loss_f(self):
        jax.block_until_ready(self.loss_f(self.outputs))

    def run_loss_fb(self):
        jax.block_until_ready(self.loss_fb(self.outputs))

    def run_step(self):
        self.state, metrics = self.step_fn(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))


def torch_model_fb(model, images) -> None:
    """Forward+backward of a PyTorch segmentation model: sum of squares of its raw train-mode outputs."""
    model.zero_grad(set_to_none=True)
    feats, coef, protos = model(images)
    (sum((f ** 2).sum() for f in feats) + (coef ** 2).sum() + (protos ** 2).sum()).backward()


class Theirs:
    """Ultralytics YOLOv8n-seg (yolov8n-seg.yaml, nc=4): model fwd+bwd, v8SegmentationLoss, step."""

    def __init__(self, batch: dict, torch, ultralytics_modules):
        SegmentationModel, v8SegmentationLoss = ultralytics_modules
        self.torch = torch
        self.model = SegmentationModel("yolov8n-seg.yaml", nc=batches.NUM_CLASSES, verbose=False)
        self.model.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5, overlap_mask=False)
        self.criterion = v8SegmentationLoss(self.model)
        self.images = torch.from_numpy(np.ascontiguousarray(batch["images"].transpose(0, 3, 1, 2)))
        self.targets = self._targets(batch)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.937, nesterov=True,
                                         weight_decay=5e-4)
        self.model.train()

    def _targets(self, batch: dict) -> dict:
        """Our padded targets -> Ultralytics' flat ones (normalised cxcywh boxes, per-instance masks)."""
        torch = self.torch
        size = batch["images"].shape[1]
        image_of, boxes, labels, masks = [], [], [], []
        for b in range(batch["valid"].shape[0]):
            rows = np.nonzero(batch["valid"][b])[0]
            xyxy = batch["boxes"][b, rows] / size
            boxes.append(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1))
            labels.append(batch["labels"][b, rows])
            masks.append(batch["masks"][b, rows])
            image_of.append(np.full(len(rows), b))
        cat = lambda parts, dtype: torch.from_numpy(np.concatenate(parts).astype(dtype))  # noqa: E731
        return {"batch_idx": cat(image_of, np.float32), "cls": cat(labels, np.float32)[:, None],
                "bboxes": cat(boxes, np.float32), "masks": cat(masks, np.uint8)}

    def run_model_fb(self):
        torch_model_fb(self.model, self.images)

    def fixed_outputs(self):
        with self.torch.no_grad():
            outputs = self.model(self.images)
        self.outputs = [[f.clone() for f in outputs[0]], outputs[1].clone(), outputs[2].clone()]

    def run_loss_f(self):
        with self.torch.no_grad():
            self.criterion(self.outputs, self.targets)

    def run_loss_fb(self):
        feats, coef, protos = self.outputs
        leaves = [[f.detach().requires_grad_() for f in feats], coef.detach().requires_grad_(),
                  protos.detach().requires_grad_()]
        self.criterion(leaves, self.targets)[0].backward()

    def run_step(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.criterion(self.model(self.images), self.targets)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.optimizer.step()


def compare_size(size: int, args, torch, ultralytics_modules, lmsfa_torch) -> None:
    batch = batches.random_batch(args.batch, size, args.objects, args.max_instances[0])
    ours, theirs = Ours(batch, args.max_instances[0]), Theirs(batch, torch, ultralytics_modules)
    torch_lmsfa = lmsfa_torch.build_model(batches.NUM_CLASSES)
    ours.compile_model_and_loss()
    theirs.fixed_outputs()
    print(f"\nbatch {args.batch} at {size} px, {args.objects} objects/image; compile s: "
          + ", ".join(f"{k} {v:.1f}" for k, v in ours.compile_s.items()), flush=True)
    print(f"{'':28}{'lmsfa_jax ms':>14}{'ultralytics ms':>16}{'ours/theirs':>13}")
    rows = {}
    for what in ("model_fb", "loss_f", "loss_fb", "step"):
        contenders = {"ours": getattr(ours, f"run_{what}"), "theirs": getattr(theirs, f"run_{what}")}
        if what == "model_fb":
            contenders["torch_lmsfa"] = lambda: torch_model_fb(torch_lmsfa, theirs.images)
        times = alternate(contenders, args.runs)
        rows[what] = times
        label = {"model_fb": "model forward+backward", "loss_f": "loss forward", "loss_fb": "loss forward+backward",
                 "step": "train step (SGD)"}[what]
        print(f"{label:<28}{1e3 * statistics.median(times['ours']):>14.1f}"
              f"{1e3 * statistics.median(times['theirs']):>16.1f}{ratio(times['ours'], times['theirs']):>12.2f}x",
              flush=True)
    same_network = rows["model_fb"]["torch_lmsfa"]
    print(f"model forward+backward of LMSF-A in PyTorch (benchmarks/lmsfa_torch.py): "
          f"{1e3 * statistics.median(same_network):.1f} ms, {ratio(same_network, rows['model_fb']['theirs']):.2f}x "
          f"Ultralytics'; ours/PyTorch's on the same network {ratio(rows['model_fb']['ours'], same_network):.2f}x")
    share = lambda who: 100 * statistics.median(rows["loss_fb"][who]) / statistics.median(rows["model_fb"][who])  # noqa: E731
    print(f"loss fwd+bwd / model fwd+bwd: ours {share('ours'):.1f} %, theirs {share('theirs'):.1f} %")
    for m in args.max_instances[1:]:
        more = Ours(batches.random_batch(args.batch, size, args.objects, m), m)
        times = alternate({"many": more.run_step, "few": ours.run_step}, args.runs)
        print(f"train step, max_instances {m} vs {args.max_instances[0]} ({args.objects} objects): "
              f"{ratio(times['many'], times['few']):.3f}x", flush=True)
    if args.profile and size == args.sizes[0]:
        costs = xla_profile.profile(ours.step_fn, ours.state, ours.batch)
        print(f"\nour train step at {size} px, XLA op time by kind:\n{xla_profile.format_kinds(costs)}")
        print(f"costliest ops:\n{xla_profile.format_top(costs, args.profile)}", flush=True)


def compare_inference(size: int, runs: int, torch, ultralytics_modules) -> None:
    config = config_lib.default_config()
    model = model_from_config(config, deploy=True)
    variables = jax.jit(reparameterize)(init_variables(model_from_config(config), 0))
    image = batches.random_batch(1, size, 1, 1)["images"]
    apply = jit_inference(model.apply).lower(variables, image).compile()
    theirs = Theirs({"images": image, "valid": np.zeros((1, 0), bool), "boxes": np.zeros((1, 0, 4)),
                     "labels": np.zeros((1, 0)), "masks": np.zeros((1, 0, size // 4, size // 4))},
                    torch, ultralytics_modules)
    fused = copy.deepcopy(theirs.model).fuse().eval()

    def run_theirs():
        with torch.inference_mode():
            fused(theirs.images)

    times = alternate({"ours": lambda: jax.block_until_ready(apply(variables, image)), "theirs": run_theirs}, runs)
    print(f"\ninference batch 1 at {size} px: ours (deploy) {1e3 * statistics.median(times['ours']):.1f} ms, "
          f"theirs (fused eager) {1e3 * statistics.median(times['theirs']):.1f} ms, "
          f"ours/theirs {ratio(times['ours'], times['theirs']):.2f}x")


def check_torch_lmsfa(lmsfa_torch, tolerance: float = 1e-3) -> None:
    """Prints how far benchmarks/lmsfa_torch.py is from the golden tensors; InputError beyond
    `tolerance` × each output's largest magnitude, or without the golden file."""
    if not lmsfa_torch.GOLDEN_NPZ.is_file():
        raise InputError(f"{lmsfa_torch.GOLDEN_NPZ}: golden data not found; it checks PyTorch's LMSF-A "
                         "(../shared/golden beside the checkout)")
    worst = max((diff / scale, name) for name, (diff, scale) in lmsfa_torch.golden_differences(
        lmsfa_torch.GOLDEN_NPZ).items() if scale > 0)
    params = lmsfa_torch.count_parameters(lmsfa_torch.build_model(batches.NUM_CLASSES))
    print(f"LMSF-A in PyTorch: {params:,} parameters; against the golden tensors, largest difference "
          f"{worst[0]:.1e} of the output's magnitude ({worst[1]})")
    if worst[0] > tolerance:
        raise InputError(f"benchmarks/lmsfa_torch.py does not match the golden tensors: {worst[1]} differs by "
                         f"{worst[0]:.1e} of its magnitude (tolerance {tolerance:g})")


def define_flags(flag_values):
    flags.DEFINE_list("sizes", ["640", "320"], "image sizes", flag_values=flag_values)
    flags.DEFINE_integer("batch", 8, "batch size", flag_values=flag_values)
    flags.DEFINE_integer("objects", 20, "objects per image", flag_values=flag_values)
    flags.DEFINE_list("max_instances", ["64", "256"],
                      "GT slots: the first for every comparison, the others against it", flag_values=flag_values)
    flags.DEFINE_integer("runs", 5, "alternating rounds (each contender: an untimed, then a timed call)",
                         flag_values=flag_values)
    flags.DEFINE_integer("inference_size", 640, "0 skips the inference comparison", flag_values=flag_values)
    flags.DEFINE_integer("inference_runs", 20, "alternating inference rounds (as --runs)", flag_values=flag_values)
    flags.DEFINE_integer("threads", os.cpu_count(), "PyTorch intra-op threads", flag_values=flag_values)
    flags.DEFINE_integer("profile", 25, "list this many costliest XLA ops of our train step at the first size "
                         "(0: none)", flag_values=flag_values)


def main(argv=None):
    flag_values = cli.parse(argv, __doc__, define_flags, uses_jax=False)
    args = types.SimpleNamespace(**{**flag_values.flag_values_dict(),
                                    "sizes": [int(s) for s in flag_values.sizes],
                                    "max_instances": [int(m) for m in flag_values.max_instances]})
    try:
        import torch  # pylint: disable=g-import-not-at-top
        from ultralytics.nn.tasks import SegmentationModel  # pylint: disable=g-import-not-at-top
        from ultralytics.utils.loss import v8SegmentationLoss  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise InputError(f"{e}: {INSTALL_HINT}") from None
    torch.set_num_threads(args.threads)
    import ultralytics  # pylint: disable=g-import-not-at-top
    print(f"JAX {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device(s)); "
          f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads); Ultralytics {ultralytics.__version__}; "
          f"huge pages for large host buffers: {'on' if host_memory.huge_pages_enabled() else 'off'} (both)")
    modules = (SegmentationModel, v8SegmentationLoss)
    import lmsfa_torch  # pylint: disable=g-import-not-at-top
    check_torch_lmsfa(lmsfa_torch)
    for size in args.sizes:
        compare_size(size, args, torch, modules, lmsfa_torch)
    if args.inference_size:
        compare_inference(args.inference_size, args.inference_runs, torch, modules)


if __name__ == "__main__":
    cli.run(main, huge_pages=True)   # as `train` runs; the same process settings for both contenders
