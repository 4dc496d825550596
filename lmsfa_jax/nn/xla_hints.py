"""Computations shaped for XLA:CPU's reduction emitter and fusion pass; the same values anywhere.

- `sum_hw`: XLA:CPU runs a reduction that keeps both an outer and an inner axis, such as
  (B, H, W, C) -> (B, C), on one thread; one over W alone, (B, H, W, C) -> (B, H, C), on all of them.
  On the 2-core machine the two-stage sum (W, then H over the 1/W-size partial sums) takes 6.3 ms
  against 10 ms at (8, 160, 160, 64), and a GroupNorm's (H, W, C/G) statistics 4.5 ms against 33 ms.
- `sums_over_bhw`: several sums over (B, H, W) of products of shifted windows (a depthwise conv's
  kernel gradient) in one pass over memory: one variadic reduction over W, which XLA:CPU runs with
  its own emitter, its operands fused in, then the (B, H) sums of the 1/W-size partial sums. Summed
  one by one, as YNNPACK reductions, each window is first copied out (written and read back): the
  3×3 kernel gradient took 49 against 8.8 ms at (8, 160, 160, 16), 6.4 against 2.7 ms at (8, 40, 40, 64).
- `materialised`: XLA fuses a chain of element-wise ops into every one of its consumers, computing
  it once per consumer. For a long chain with several consumers (a gradient that feeds a norm's two
  reductions and its input gradient, or nine shifted windows) that costs more than writing it to
  memory once. `lax.optimization_barrier` does not prevent it: XLA removes the barrier before fusing.
"""
import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_vjp
def sum_hw(x: jax.Array) -> jax.Array:
    """Σ over axes 1 and 2 of x (B, H, W, ...) -> (B, ...). Its gradient is a broadcast."""
    if jax.default_backend() != "cpu":
        return jnp.sum(x, axis=(1, 2))
    # The barrier keeps XLA's simplifier from merging the two sums back into the one-thread reduction.
    return jnp.sum(lax.optimization_barrier(jnp.sum(x, axis=2)), axis=1)


def _sum_hw_fwd(x):
    return sum_hw(x), x.shape


def _sum_hw_bwd(shape, dy):
    return (jnp.broadcast_to(dy[:, None, None], shape),)


sum_hw.defvjp(_sum_hw_fwd, _sum_hw_bwd)


def sums_over_bhw(terms: list) -> list:
    """[Σ over axes 0, 1, 2 of t for t in terms] for terms of one shape (B, H, W, ...) and dtype, each
    -> (...); on the CPU as one variadic reduction over W, then sums over (B, H) (module docstring)."""
    if jax.default_backend() != "cpu":
        return [jnp.sum(t, axis=(0, 1, 2)) for t in terms]
    partial_sums = lax.reduce(terms, [jnp.zeros((), t.dtype) for t in terms],
                              lambda a, b: [u + v for u, v in zip(a, b)], (2,))
    return [jnp.sum(t, axis=(0, 1)) for t in partial_sums]


def materialised(x: jax.Array) -> jax.Array:
    """x, written to memory once on the CPU, so that its consumers read it rather than each computing
    it again; x itself elsewhere. A conditional's operand is computed before it (XLA fuses nothing
    across one); both branches return x ((x − x) + x, taken only when x's first element is NaN, is
    there so that XLA does not see two equal branches and remove the conditional)."""
    if jax.default_backend() != "cpu":
        return x
    first = x.reshape(-1)[0]
    return lax.cond(first == first, lambda v: v, lambda v: (v - v) + v, x)


@jax.custom_vjp
def gradient_materialised(x: jax.Array) -> jax.Array:
    """The identity, whose gradient is `materialised`: computed once however many ops read it."""
    return x


gradient_materialised.defvjp(lambda x: (x, None), lambda _, g: (materialised(g),))
