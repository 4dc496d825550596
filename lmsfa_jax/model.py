"""LMSF-A: the whole network, built from a declarative layer table like the reference YAML.

    model = LMSFA(num_classes=4, scale="n")
    variables = init_variables(model, seed=0)      # == model.init(key, images), but faster
    decoded, protos = model.apply(variables, images)                       # eval
    (maps, mask_coef, protos), updates = model.apply(
        variables, images, train=True, mutable=["batch_stats"])            # training

images: (B, H, W, 3) float in [0, 1], H and W multiples of 32. See `LMSH` for the outputs.
Layer i's Flax module is named `model_{i}`, matching PyTorch's `model.{i}`.
"""
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmsfa_jax.nn import LMSH, SPPF, SSFF, TFE, Add, C2fPro, Concat, Conv
from lmsfa_jax.nn.conv import resolve_depthwise_impl

MAX_STRIDE = 32


class Layer(NamedTuple):
    """One row of the layer table: `source` (-1 = previous layer), base `repeats`, module, args."""
    source: int | tuple[int, ...]
    repeats: int
    module: str
    args: tuple


# The reference LMSF-A.yaml (backbone 0–9, neck 10–25, head 26), with unscaled widths/depths.
LAYERS: tuple[Layer, ...] = (
    Layer(-1, 1, "Conv", (64, 3, 2)),          # 0  P1/2
    Layer(-1, 1, "Conv", (128, 3, 2)),         # 1  P2/4
    Layer(-1, 3, "C2fPro", (128,)),            # 2
    Layer(-1, 1, "Conv", (256, 3, 2)),         # 3  P3/8
    Layer(-1, 6, "C2fPro", (256,)),            # 4
    Layer(-1, 1, "Conv", (512, 3, 2)),         # 5  P4/16
    Layer(-1, 6, "C2fPro", (512,)),            # 6
    Layer(-1, 1, "Conv", (1024, 3, 2)),        # 7  P5/32
    Layer(-1, 3, "C2fPro", (1024,)),           # 8
    Layer(-1, 1, "SPPF", (1024, 5)),           # 9
    Layer(-1, 1, "Conv", (512, 1, 1)),         # 10
    Layer(4, 1, "Conv", (512, 1, 1)),          # 11
    Layer((11, 6, 10), 1, "TFE", ()),          # 12
    Layer(-1, 3, "C2fPro", (512,)),            # 13
    Layer(-1, 1, "Conv", (256, 1, 1)),         # 14
    Layer(2, 1, "Conv", (256, 1, 1)),          # 15
    Layer((15, 4, 14), 1, "TFE", ()),          # 16
    Layer(-1, 3, "C2fPro", (256,)),            # 17 P3 out
    Layer(-1, 1, "Conv", (256, 3, 2)),         # 18
    Layer((18, 14), 1, "Concat", ()),          # 19
    Layer(-1, 3, "C2fPro", (512,)),            # 20 P4 out
    Layer(-1, 1, "Conv", (512, 3, 2)),         # 21
    Layer((21, 10), 1, "Concat", ()),          # 22
    Layer(-1, 3, "C2fPro", (1024,)),           # 23 P5 out
    Layer((4, 6, 8), 1, "SSFF", (256,)),       # 24
    Layer((17, 24), 1, "Add", ()),             # 25
    Layer((25, 20, 23), 1, "LMSH", (32, 256, 256)),  # 26: masks, proto width, hidden width
)

# scale: (depth multiple, width multiple, max channels), as in the Ultralytics YAMLs.
SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class ResolvedLayer(NamedTuple):
    """A layer-table row with the scale applied: module name, sources, constructor kwargs, out ch."""
    module: str
    sources: tuple[int, ...]
    kwargs: dict
    out_channels: int


def resolve_layers(scale: str, num_classes: int) -> list[ResolvedLayer]:
    """Apply a scale's depth/width/max-channel multiples to `LAYERS` (Ultralytics parse_model)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    depth, width, max_ch = SCALES[scale]
    width_of = lambda c: make_divisible(min(c, max_ch) * width)  # noqa: E731
    channels, out = [], []
    for i, layer in enumerate(LAYERS):
        sources = (layer.source,) if isinstance(layer.source, int) else layer.source
        sources = tuple(i + s if s < 0 else s for s in sources)  # -1 stays: the input image
        repeats = max(round(layer.repeats * depth), 1) if layer.repeats > 1 else layer.repeats
        c_in = [channels[s] if s >= 0 else 3 for s in sources]
        if layer.module == "Conv":
            c2, k, s = layer.args
            kwargs, c_out = dict(features=width_of(c2), kernel_size=k, stride=s), width_of(c2)
        elif layer.module == "C2fPro":
            kwargs, c_out = dict(features=width_of(layer.args[0]), n=repeats), width_of(layer.args[0])
        elif layer.module == "SPPF":
            kwargs, c_out = dict(features=width_of(layer.args[0]), k=layer.args[1]), width_of(layer.args[0])
        elif layer.module in ("TFE", "Concat"):
            kwargs, c_out = {}, sum(c_in)
        elif layer.module == "Add":
            kwargs, c_out = {}, c_in[0]
        elif layer.module == "SSFF":
            kwargs, c_out = dict(features=width_of(layer.args[0])), width_of(layer.args[0])
        elif layer.module == "LMSH":
            nm, npr, hidc = layer.args
            kwargs = dict(num_classes=num_classes, num_masks=nm, proto_hidden=width_of(npr),
                          hidden=width_of(hidc))
            c_out = 0
        else:
            raise ValueError(f"unknown module {layer.module!r} in layer {i}")
        channels.append(c_out)
        out.append(ResolvedLayer(layer.module, sources, kwargs, c_out))
    return out


_MODULES = {"Conv": Conv, "C2fPro": C2fPro, "SPPF": SPPF, "TFE": TFE, "Concat": Concat,
            "Add": Add, "SSFF": SSFF, "LMSH": LMSH}
_TAKES_DEPLOY = ("Conv", "C2fPro", "SPPF", "SSFF", "LMSH")
_TAKES_DEPTHWISE = ("C2fPro",)
_MULTI_INPUT = ("TFE", "Concat", "Add", "SSFF", "LMSH")


def check_images(images) -> None:
    """Raise ValueError unless images is (B, H, W, 3) floating with H, W multiples of 32."""
    shape, dtype = getattr(images, "shape", None), getattr(images, "dtype", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"images must be a 4-D (B, H, W, 3) array (NHWC), got shape {shape}")
    if shape[-1] != 3:
        raise ValueError(f"images must have 3 channels last (B, H, W, 3) RGB, got shape {tuple(shape)}")
    if shape[1] % MAX_STRIDE or shape[2] % MAX_STRIDE:
        raise ValueError(f"image height and width must be multiples of {MAX_STRIDE}, got "
                         f"{shape[1]}×{shape[2]}; letterbox or pad the input first")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"images must be floating point (float32 in [0, 1]), got dtype {dtype}; "
                         "divide uint8 images by 255")


class LMSFA(nn.Module):
    """LMSF-A instance segmentation network (C2f-Pro backbone, TFE/SSFF neck, LMSH head).

    num_classes: object classes (PELD: 4). scale: 'n', 's', 'm', 'l' or 'x'.
    deploy: consume re-parameterised variables (`lmsfa_jax.reparameterize`; `params` only).
    depthwise_impl: 'auto' (per backend), 'lax' or 'shift' (see `depthwise_conv2d`).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    """
    num_classes: int = 4
    scale: str = "n"
    deploy: bool = False
    depthwise_impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, images, train: bool = False, decode: bool | None = None):
        """images (B, H, W, 3) -> (decoded, protos) if decode else (maps, mask_coef, protos).

        decode defaults to `not train`; train=True uses batch statistics (apply with
        mutable=['batch_stats']), decode=False with train=False gives the raw head outputs
        under running statistics (e.g. for a validation loss).
        """
        check_images(images)
        if train and self.deploy:
            raise ValueError("a deploy=True model is inference-only; train the training-form model")
        impl = resolve_depthwise_impl(self.depthwise_impl)
        x = images.astype(self.dtype or jnp.float32)
        outputs = []
        for i, layer in enumerate(resolve_layers(self.scale, self.num_classes)):
            kwargs = dict(layer.kwargs)
            if layer.module in _TAKES_DEPLOY:
                kwargs.update(deploy=self.deploy, dtype=self.dtype)
            if layer.module in _TAKES_DEPTHWISE:
                kwargs.update(depthwise_impl=impl)
            module = _MODULES[layer.module](name=f"model_{i}", **kwargs)
            inputs = [outputs[s] if s >= 0 else x for s in layer.sources]
            arg = inputs if layer.module in _MULTI_INPUT else inputs[0]
            x = module(arg, train=train, decode=decode) if layer.module == "LMSH" else module(arg, train=train)
            outputs.append(x)
        return x


INIT_IMAGE_SHAPE = (1, 64, 64, 3)   # variable shapes do not depend on the image size

# XLA:CPU hands two kinds of fusion to YNNPACK by default: matrix products (with their
# element-wise neighbours) and reductions. Measured side by side on the 2-core CPU machine: deploy
# inference at 640 px without either takes 0.87x (batch 8) and 0.91-0.95x (batch 1) the time; the
# train step with the reductions only takes 0.96x at 640 px and 1.0x at 128 px (without them, 1.5x).
_CPU_YNN_FUSIONS = {"inference": "", "training": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=None)
def cpu_compiler_options(purpose: str) -> dict:
    """XLA compiler options for a computation that is 'inference' (a forward pass only) or
    'training' (differentiated): the YNNPACK fusions that run it fastest on this machine's CPU.
    Empty off the CPU, or for an XLA that lacks the option."""
    options = {"xla_cpu_experimental_ynn_fusion_type": _CPU_YNN_FUSIONS[purpose]}
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(())).compile(compiler_options=options)
    except Exception:  # pylint: disable=broad-except  (an XLA without the option: compile as usual)
        return {}
    return options


def jit_inference(fn):
    """`jax.jit(fn)` for a forward pass that is not differentiated (evaluation, prediction, exported
    or benchmarked inference), with the compiler options that make it fastest here."""
    return jax.jit(fn, compiler_options=cpu_compiler_options("inference"))


@functools.lru_cache(maxsize=None)
def _jitted_init(model: LMSFA):
    return jax.jit(functools.partial(model.init, train=False))


def init_variables(model: LMSFA, seed: int = 0) -> dict:
    """Random variables ({'params', 'batch_stats'}, or {'params'} for deploy) for `model`.

    Same as `model.init` on a small dummy image, with two savings: the jitted init is cached per
    model configuration, and the key uses the 'rbg' PRNG, which compiles the ~350 parameter
    draws about twice as fast as the default threefry on CPU.
    """
    key = jax.random.key(seed, impl="rbg")
    return _jitted_init(model)(key, jnp.zeros(INIT_IMAGE_SHAPE, jnp.float32))


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def model_from_config(config, deploy: bool = False) -> LMSFA:
    """LMSFA from a run config: config.model.{num_classes, scale, depthwise_impl}, config.dtype."""
    dtype = config.get("dtype", "float32")
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"config.dtype must be one of {sorted(COMPUTE_DTYPES)}, got {dtype!r}")
    return LMSFA(num_classes=config.model.num_classes, scale=config.model.scale, deploy=deploy,
                 depthwise_impl=config.model.get("depthwise_impl", "auto"), dtype=COMPUTE_DTYPES[dtype])
