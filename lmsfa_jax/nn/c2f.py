"""C2f-Pro: a C2f (CSP, two convs) whose bottlenecks are RepViT-EMA blocks."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lmsfa_jax.nn.conv import Conv
from lmsfa_jax.nn.repvit import RepViTBlockEMA


class C2fPro(nn.Module):
    """(B, H, W, C1) -> (B, H, W, C2) with c = C2/2:

    cv1 = Conv(C1 -> 2c, 1×1); split [y0, y1]; y_{k+1} = block_k(y_k) for n blocks;
    cv2 = Conv((2 + n)c -> C2, 1×1) of concat[y0, y1, y2, …]. Torch names: cv1, cv2, m.{j}.
    """
    features: int
    n: int = 1
    deploy: bool = False
    depthwise_impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = self.features // 2
        y = Conv(2 * c, 1, deploy=self.deploy, dtype=self.dtype, name="cv1")(x, train)
        ys = [y[..., :c], y[..., c:]]
        for j in range(self.n):
            block = RepViTBlockEMA(self.deploy, self.depthwise_impl, self.dtype, name=f"m_{j}")
            ys.append(block(ys[-1], train))
        return Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name="cv2")(
            jnp.concatenate(ys, axis=-1), train)
