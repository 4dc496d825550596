"""SPPF: spatial pyramid pooling, fast (three chained 5×5 max-pools)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lmsfa_jax.nn.conv import Conv


def max_pool_same(x, k: int):
    """k×k max-pool, stride 1, padding k//2 where padded positions never win. NHWC."""
    p = k // 2
    return nn.max_pool(x, (k, k), strides=(1, 1), padding=((p, p), (p, p)))


class SPPF(nn.Module):
    """(B, H, W, C1) -> (B, H, W, C2): a = cv1(x) (C1/2 ch); b, c, d = pool(a), pool(b), pool(c);
    cv2(concat[a, b, c, d]). Torch names: cv1, cv2."""
    features: int
    k: int = 5
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        a = Conv(x.shape[-1] // 2, 1, deploy=self.deploy, dtype=self.dtype, name="cv1")(x, train)
        pooled = [a]
        for _ in range(3):
            pooled.append(max_pool_same(pooled[-1], self.k))
        return Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name="cv2")(
            jnp.concatenate(pooled, axis=-1), train)
