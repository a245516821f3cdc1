"""Vector quantizer over a learned codebook (the atomic visual space, docs/design.md §2.3)."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from fact_fast import ops

__all__ = ["VectorQuantizer"]


class VectorQuantizer(nn.Module):
    """Codebook ``P [K, d]``; ``forward(z [..., d]) -> (v, index, commit_loss)`` via ``ops.vq_quantize``.

    * Straight-through estimator and commitment loss are those of ``fact_fast.ops.vq_quantize``
      (``beta`` weights the encoder term).
    * ``data_init=True``: on the first training forward the codebook is filled with (jittered)
      samples of that batch's features, so every code starts inside the data distribution instead
      of a far-away random point that would never be selected (dead codes). The flag is a buffer,
      so a resumed run does not re-initialise. Under torch.distributed the rank-0 codebook is
      broadcast so all replicas agree.
    * ``restart_every > 0``: every ``restart_every`` training forwards, codes selected fewer than
      ``dead_threshold`` times in that window ("dead codes") are re-seeded from the current
      batch's features (the codebook-reset trick of Jukebox / SoundStream), which keeps the
      codebook from collapsing onto a few codes when the encoder drifts early in training.
    * Usage statistics are accumulated from the indices the forward already computes (no extra
      pass) while training: :meth:`codebook_stats` gives perplexity and the fraction of codes
      used since the last :meth:`reset_stats`.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, data_init: bool = True,
                 restart_every: int = 0, dead_threshold: float = 1.0):
        super().__init__()
        if num_codes <= 0 or dim <= 0:
            raise ValueError(f"num_codes and dim must be positive, got {num_codes}, {dim}")
        self.num_codes, self.dim, self.beta = int(num_codes), int(dim), float(beta)
        self.codebook = nn.Parameter(torch.empty(self.num_codes, self.dim))
        nn.init.uniform_(self.codebook, -1.0 / self.num_codes, 1.0 / self.num_codes)
        self.register_buffer("initialized", torch.tensor(not data_init))
        # Plain attribute, not a buffer: DDP would overwrite buffers with rank 0's every step and
        # statistics do not belong in checkpoints.
        self._counts = torch.zeros(self.num_codes, dtype=torch.float64)
        self.track_stats = True
        self.restart_every, self.dead_threshold = int(restart_every), float(dead_threshold)
        self._window = torch.zeros(self.num_codes, dtype=torch.float64)
        self._window_steps = 0
        self.num_restarted = 0

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, "
                f"restart_every={self.restart_every}")

    def restart_state(self) -> dict:
        """The dead-code window (counts and steps): it decides when and which codes are re-seeded,
        so a resumed run must continue it or it diverges from the uninterrupted one. Kept out of
        the state dict (DDP would overwrite rank-local counts with rank 0's; weight averaging such
        as EMA expects tensors only) and checkpointed by the trainer with the optimizer state."""
        return {"window": self._window.clone(), "window_steps": self._window_steps,
                "num_restarted": self.num_restarted}

    def load_restart_state(self, state: dict) -> None:
        self._window = state["window"].to(torch.float64).clone()
        self._window_steps = int(state["window_steps"])
        self.num_restarted = int(state.get("num_restarted", 0))

    @torch.no_grad()
    def init_from_data(self, z: torch.Tensor) -> None:
        """Fill the codebook with samples of ``z [..., d]`` (with replacement and small jitter)."""
        flat = z.detach().reshape(-1, self.dim).float()
        if flat.shape[0] == 0:
            return
        n = flat.shape[0]
        if n >= self.num_codes:
            idx = torch.randperm(n, device=flat.device)[: self.num_codes]
        else:
            idx = torch.randint(0, n, (self.num_codes,), device=flat.device)
        scale = flat.std(0, keepdim=True).clamp_min(1e-6) * 0.1  # jitter keeps duplicates distinct
        init = flat[idx] + torch.randn_like(flat[idx]) * scale
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(init, 0)
        self.codebook.data.copy_(init.to(self.codebook.dtype))
        self.initialized.fill_(True)

    def forward(self, z: torch.Tensor):
        if z.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer: expected z[..., {self.dim}], got {tuple(z.shape)}")
        if self.training and not bool(self.initialized):
            self.init_from_data(z)
        if self.training and self.restart_every > 0 and self._window_steps >= self.restart_every:
            self.restart_dead_codes(z)
        # mixed precision: quantise in the codebook's precision (fp32 params under autocast)
        if z.dtype != self.codebook.dtype:
            z = z.to(self.codebook.dtype)
        v, index, commit = ops.vq_quantize(z, self.codebook, beta=self.beta)
        if self.training:
            self._accumulate(index)
        return v, index, commit

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        """Re-seed codes used < ``dead_threshold`` times in the current window from ``z``; returns
        how many were re-seeded and starts a new window."""
        window = self._window
        if dist.is_available() and dist.is_initialized():
            window = window.to(self.codebook.device)
            dist.all_reduce(window)
        dead = (window < self.dead_threshold).to(self.codebook.device)
        n_dead = int(dead.sum())
        flat = z.detach().reshape(-1, self.dim).float()
        if n_dead and flat.shape[0]:
            idx = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
            scale = flat.std(0, keepdim=True).clamp_min(1e-6) * 0.1 if flat.shape[0] > 1 else 1e-3
            new = flat[idx] + torch.randn(n_dead, self.dim, device=flat.device) * scale
            if dist.is_available() and dist.is_initialized():
                dist.broadcast(new, 0)
            self.codebook.data[dead] = new.to(self.codebook.dtype)
            self.num_restarted += n_dead
        self._window = torch.zeros_like(self._window)
        self._window_steps = 0
        return n_dead

    @torch.no_grad()
    def _accumulate(self, index: torch.Tensor) -> None:
        counts = torch.bincount(index.reshape(-1), minlength=self.num_codes).to(torch.float64)
        if self.track_stats:
            if self._counts.device != counts.device:
                self._counts = self._counts.to(counts.device)
            self._counts += counts
        if self.restart_every > 0:
            if self._window.device != counts.device:
                self._window = self._window.to(counts.device)
            self._window += counts
            self._window_steps += 1

    def reset_stats(self) -> None:
        self._counts = torch.zeros_like(self._counts)

    @property
    def code_counts(self) -> torch.Tensor:
        """How often each code was selected since the last reset (training forwards only)."""
        return self._counts

    def codebook_stats(self, counts: torch.Tensor | None = None, reset: bool = False) -> dict:
        """``{"perplexity", "usage", "num_tokens"}``: exp(entropy) of the code histogram (1 ..
        K), fraction of codes selected at least once, and tokens counted. ``counts`` overrides
        the accumulated histogram (e.g. after an all-reduce across ranks)."""
        c = (self._counts if counts is None else counts).double().cpu()
        total = float(c.sum())
        if total > 0:
            p = c / total
            nz = p[p > 0]
            perplexity = math.exp(float(-(nz * nz.log()).sum()))
            usage = float((c > 0).sum()) / self.num_codes
        else:
            perplexity, usage = 0.0, 0.0
        if reset:
            self.reset_stats()
        return {"perplexity": perplexity, "usage": usage, "num_tokens": int(total)}
