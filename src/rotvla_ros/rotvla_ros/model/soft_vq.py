"""SoftVQ (paper appendix B, after SoftVQ-VAE): a soft categorical posterior over a
learnable codebook; the latent is the posterior's expectation over the codewords.

    q(k | z) = softmax_k(-||z - c_k||^2 / tau),      z_q = sum_k q(k | z) c_k

The KL to the uniform prior U over K codewords is KL(q || U) = log K - H(q). Where it is
applied is a choice (``kl_mode``):

- ``"batch"`` (default): KL of the batch-mean posterior, log K - H(mean_b q_b). It is small
  when the batch uses the whole codebook, and leaves each sample's posterior free to be
  peaked, i.e. informative. The SoftVQ authors' code does this, as an entropy term.
- ``"sample"``: mean over samples of KL(q_b || U), literally the paper's Eq. 17-20. It
  pushes every posterior towards uniform, hence every latent towards the codebook mean,
  against the information the latent must carry; kept for the ablation.

``quantizer="vq"`` is the discrete VQ-VAE baseline of the paper's ablation (nearest codeword,
straight-through gradient, codebook and commitment losses), through the same module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import SoftVQConfig


@dataclass
class QuantizerOutput:
    latent: torch.Tensor  # (..., D) quantised latent
    loss: torch.Tensor  # scalar: KL (soft) or codebook + commitment (vq)
    posterior: torch.Tensor  # (..., K) soft posterior, one-hot for vq
    perplexity: torch.Tensor  # scalar: exp(entropy of the batch-mean posterior), codebook usage


class SoftVQ(nn.Module):
    def __init__(self, config: SoftVQConfig, dim: int):
        super().__init__()
        self.config = config
        # Codewords start small so that the first latents sit near the origin of the
        # unconstrained matrix space, not far out in one direction.
        self.codebook = nn.Parameter(torch.randn(config.codebook_size, dim) * config.init_scale)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat = z.reshape(-1, z.shape[-1]).float()  # (N, D)
        codebook = self.codebook.float()
        distances = (
            flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(-1)[None]
        )  # (N, K)
        if self.config.quantizer == "soft":
            posterior = F.softmax(-distances / self.config.temperature, dim=-1)
            latent = posterior @ codebook
            loss = self._kl_to_uniform(posterior)
        elif self.config.quantizer == "vq":
            index = distances.argmin(dim=-1)
            posterior = F.one_hot(index, self.config.codebook_size).to(flat.dtype)
            quantised = codebook[index]
            loss = F.mse_loss(quantised, flat.detach()) + self.config.commitment * F.mse_loss(flat, quantised.detach())
            latent = flat + (quantised - flat).detach()  # straight-through
        else:
            raise ValueError(f"unknown quantizer {self.config.quantizer!r} (soft or vq)")
        mean_posterior = posterior.mean(0)
        perplexity = torch.exp(-(mean_posterior * torch.log(mean_posterior + 1e-10)).sum())
        return QuantizerOutput(
            latent=latent.reshape(z.shape).to(z.dtype),
            loss=loss,
            posterior=posterior.reshape(*z.shape[:-1], -1),
            perplexity=perplexity,
        )

    def _kl_to_uniform(self, posterior: torch.Tensor) -> torch.Tensor:
        log_k = math.log(self.config.codebook_size)
        if self.config.kl_mode == "batch":
            mean = posterior.mean(0)
            return log_k + (mean * torch.log(mean + 1e-10)).sum()
        if self.config.kl_mode == "sample":
            return log_k + (posterior * torch.log(posterior + 1e-10)).sum(-1).mean()
        raise ValueError(f"unknown kl_mode {self.config.kl_mode!r} (batch or sample)")
