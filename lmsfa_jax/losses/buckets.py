"""Static-size buckets: run a computation at the smallest of a few fixed sizes that holds a count
known only at run time, so that padded work follows the real count while shapes stay static.

    sizes = bucket_sizes(640)                      # (16, 32, 64, 128, 256, 512, 640)
    out = switch_on_size(count, sizes, lambda size: f(x[:, :size]))

`jax.lax.switch` runs only the chosen branch (every branch is compiled). Under `jax.vmap` a
switch on a batched index becomes a select that runs all branches, so call this on counts taken
over the whole batch, not inside a vmapped function.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def bucket_sizes(limit: int, smallest: int = 16, growth: int = 2) -> tuple[int, ...]:
    """Sizes smallest·growth^i below `limit`, then `limit` itself (so every count <= limit fits)."""
    if limit < 1:
        raise ValueError(f"bucket limit must be positive, got {limit}")
    sizes, size = [], smallest
    while size < limit:
        sizes.append(size)
        size *= growth
    return (*sizes, limit)


def switch_on_size(count: jax.Array, sizes: Sequence[int], branch: Callable[[int], object]):
    """branch(s) for the smallest s in `sizes` (ascending) with s >= count; `count` an int scalar.

    Counts above the largest size use the largest (the caller guarantees count <= sizes[-1]).
    """
    if len(sizes) == 1:
        return branch(sizes[0])
    index = jnp.sum(jnp.asarray(count) > jnp.asarray(sizes[:-1])).astype(jnp.int32)
    return jax.lax.switch(index, [lambda s=s: branch(s) for s in sizes])
