"""LMSF-A instance segmentation in JAX/Flax (arXiv 2512.21984).

    from lmsfa_jax import LMSFA, reparameterize, from_torch_state_dict
"""
from lmsfa_jax.model import LMSFA
from lmsfa_jax.reparam import fuse_conv_bn, repvgg_dw_to_conv, reparameterize
from lmsfa_jax.weights import from_torch_state_dict, to_torch_state_dict

__all__ = ["LMSFA", "reparameterize", "fuse_conv_bn", "repvgg_dw_to_conv",
           "from_torch_state_dict", "to_torch_state_dict"]
