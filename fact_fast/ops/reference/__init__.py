"""Plain-PyTorch reference implementations: the oracle every fused backend is tested against.

They take already-validated inputs (the front-ends in ``fact_fast.ops`` check them) and let
autograd compute the backward.
"""
from .attention import sigmoid_attention, sigmoid_interface
from .fuzzy import fuzzy_loss, fuzzy_membership
from .gcn import gcn_norm_coo, gcn_propagate
from .vq import vq_nearest, vq_quantize

__all__ = ["vq_nearest", "vq_quantize", "gcn_propagate", "gcn_norm_coo", "sigmoid_attention",
           "sigmoid_interface", "fuzzy_membership", "fuzzy_loss"]
