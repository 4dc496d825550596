"""Per-layer summary of LMSF-A: module, parameters, output shape, conv GFLOPs; totals for the
training form and the re-parameterised (deploy) form, with XLA's own cost estimate beside.

    python -m lmsfa_jax.summary [--config configs/peld.py] [--size 640]

Also `lmsfa-summary`. Without --config: the default model (4 classes, scale 'n').
"""
import math

import jax
import jax.numpy as jnp
from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.flops import conv_flops_by_layer
from lmsfa_jax.model import LMSFA, init_variables, resolve_layers
from lmsfa_jax.reparam import reparameterize


def count_params(tree) -> int:
    """Number of scalars in a pytree (e.g. variables['params'])."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def layer_output_shapes(model: LMSFA, variables, image_shape) -> dict[str, object]:
    """Abstract per-layer outputs {'model_i': shape or tuple of shapes}."""
    x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    _, state = jax.eval_shape(lambda v, x: model.apply(
        v, x, capture_intermediates=lambda m, name: len(m.path) == 1, mutable=["intermediates"]),
        variables, x)
    shapes = {}
    for name, entry in state["intermediates"].items():
        out = entry["__call__"][0]
        shapes[name] = jax.tree.map(lambda a: tuple(a.shape), out)
    return shapes


def summarize(model: LMSFA, variables, size: int = 640) -> tuple[list[dict], dict]:
    """Rows (index, module, params, output shape, GFLOPs) and totals for one model form."""
    image_shape = (1, size, size, 3)
    x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    flops = conv_flops_by_layer(model.apply, variables, x)
    shapes = layer_output_shapes(model, variables, image_shape)
    rows = []
    for i, layer in enumerate(resolve_layers(model.scale, model.num_classes)):
        name = f"model_{i}"
        rows.append(dict(index=i, module=layer.module, sources=layer.sources,
                         params=count_params(variables["params"].get(name, {})),
                         shape=shapes.get(name), gflops=flops.get(name, 0) / 1e9))
    totals = dict(params=count_params(variables["params"]), gflops=sum(flops.values()) / 1e9)
    return rows, totals


def xla_gflops(model: LMSFA, variables, size: int = 640) -> float:
    """XLA's `cost_analysis()` flop estimate (counts every op, not only convolutions)."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    cost = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) / 1e9


def format_table(rows: list[dict]) -> str:
    lines = [f"{'idx':>3}  {'from':<14}{'module':<8}{'params':>10}  {'GFLOPs':>7}  output"]
    for r in rows:
        src = "-1" if r["sources"] == (r["index"] - 1,) else str(list(r["sources"]))
        lines.append(f"{r['index']:>3}  {src:<14}{r['module']:<8}{r['params']:>10,}  "
                     f"{r['gflops']:>7.3f}  {r['shape']}")
    return "\n".join(lines)


def define_flags(flag_values):
    flags.DEFINE_integer("size", 640, "square input size for the GFLOPs figure", flag_values=flag_values)


def main(argv=None) -> None:
    args = cli.parse(argv, __doc__, define_flags, config=cli.OPTIONAL_CONFIG)
    num_classes, scale, size = args.config.model.num_classes, args.config.model.scale, args.size
    model = LMSFA(num_classes=num_classes, scale=scale)
    variables = init_variables(model)
    rows, totals = summarize(model, variables, size)
    deploy_model = LMSFA(num_classes=num_classes, scale=scale, deploy=True)
    deploy_variables = jax.jit(reparameterize)(variables)
    _, deploy_totals = summarize(deploy_model, deploy_variables, size)
    print(f"LMSFA(num_classes={num_classes}, scale={scale!r}) at {size}×{size}")
    print(format_table(rows))
    print(f"training form: {totals['params']:,} trainable parameters "
          f"({count_params(variables['batch_stats']):,} BatchNorm statistics), "
          f"{totals['gflops']:.3f} conv GFLOPs (XLA cost_analysis: {xla_gflops(model, variables, size):.3f})")
    print(f"deploy form:   {deploy_totals['params']:,} trainable parameters, "
          f"{deploy_totals['gflops']:.3f} conv GFLOPs "
          f"(XLA cost_analysis: {xla_gflops(deploy_model, deploy_variables, size):.3f})")
    print("GFLOPs = 2 × conv multiply-accumulates; the paper's 8.8 (thop) also counts BatchNorm.")


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
