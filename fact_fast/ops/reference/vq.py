"""Reference vector quantization: full N×K distance table, as most VQ code does it."""
from __future__ import annotations

import torch


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N, d], codebook [K, d] -> (index int64 [N], dist [N] in z.dtype).

    The index comes from the expanded distance ‖z‖² − 2⟨z,p⟩ + ‖p‖² (ties: lowest index, as
    ``torch.argmin`` does); ``dist`` is then recomputed exactly as ‖z − p_index‖² so it is
    differentiable with respect to both inputs.
    """
    zf, pf = z.detach().float(), codebook.detach().float()
    table = (zf * zf).sum(1, keepdim=True) - 2.0 * zf @ pf.t() + (pf * pf).sum(1)
    index = table.argmin(dim=1) if z.shape[0] > 0 else z.new_zeros(0, dtype=torch.int64)
    dist = (z - codebook[index]).pow(2).sum(-1)
    return index, dist


def vq_quantize(z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [..., d] -> (v [..., d], index int64 [...], commit_loss scalar).

    v = z + sg(z_q − z) (straight-through), commit = mean‖sg[z] − z_q‖² + β·mean‖z − sg[z_q]‖²
    over all elements; an empty z gives a zero loss instead of NaN.
    """
    d = z.shape[-1]
    flat = z.reshape(-1, d)
    index, _ = vq_nearest(flat.detach(), codebook.detach())
    zq = codebook[index]
    denom = max(flat.numel(), 1)
    codebook_term = (flat.detach() - zq).pow(2).sum() / denom
    encoder_term = (flat - zq.detach()).pow(2).sum() / denom
    commit = codebook_term + beta * encoder_term
    v = flat + (zq - flat).detach()
    return v.reshape(z.shape), index.reshape(z.shape[:-1]), commit
