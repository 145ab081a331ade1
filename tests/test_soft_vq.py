"""SoftVQ: the expectation over codewords, the two KL placements, the discrete baseline."""

import math

import torch

from rotvla_ros.model.config import SoftVQConfig
from rotvla_ros.model.soft_vq import SoftVQ


def test_soft_latent_is_the_posterior_expectation_over_codewords():
    vq = SoftVQ(SoftVQConfig(codebook_size=8, temperature=0.5), dim=4)
    z = torch.randn(5, 3, 4)
    out = vq(z)
    assert out.latent.shape == z.shape and out.posterior.shape == (5, 3, 8)
    torch.testing.assert_close(out.posterior.sum(-1), torch.ones(5, 3))
    torch.testing.assert_close(out.latent, out.posterior @ vq.codebook.detach())
    # Differentiable to the input and the codebook.
    out.latent.sum().backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0


def test_kl_modes_batch_rewards_usage_and_sample_rewards_uniform_posteriors():
    codebook_size = 4
    batch_vq = SoftVQ(SoftVQConfig(codebook_size=codebook_size, kl_mode="batch"), dim=2)
    sample_vq = SoftVQ(SoftVQConfig(codebook_size=codebook_size, kl_mode="sample"), dim=2)
    peaked_and_diverse = torch.eye(codebook_size).repeat(8, 1)  # each sample certain, all codes used
    assert abs(batch_vq._kl_to_uniform(peaked_and_diverse).item()) < 1e-6
    assert abs(sample_vq._kl_to_uniform(peaked_and_diverse).item() - math.log(codebook_size)) < 1e-6
    collapsed = torch.zeros(32, codebook_size)
    collapsed[:, 0] = 1  # every sample on one code
    assert abs(batch_vq._kl_to_uniform(collapsed).item() - math.log(codebook_size)) < 1e-6


def test_discrete_vq_baseline_picks_the_nearest_codeword_with_straight_through_gradient():
    vq = SoftVQ(SoftVQConfig(quantizer="vq", codebook_size=16), dim=3)
    z = torch.randn(10, 3, requires_grad=True)
    out = vq(z)
    nearest = torch.cdist(z.detach(), vq.codebook.detach()).argmin(-1)
    torch.testing.assert_close(out.latent.detach(), vq.codebook.detach()[nearest])
    out.latent.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))
    assert out.loss.item() > 0
