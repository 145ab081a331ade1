"""Rotation maths for RotVLA, batched over any leading dimensions.

Latent actions live in SO(n) (paper Sec. 3.1): the LAM predicts an unconstrained n x n
matrix and projects it onto the closest rotation in Frobenius norm (Eq. 4). Robot actions
use Rotate6D (Zhou et al. 2019) for each arm's orientation.

Choices:
- ``project_to_so_n`` is the special orthogonal Procrustes solution R = U diag(1,..,1,d) V^T
  with d = det(U V^T). Plain autograd through ``torch.linalg.svd`` differentiates U and V
  separately, with 1 / (s_i^2 - s_j^2) terms that are infinite at repeated singular values:
  the identity, scaled identities and exact rotations, i.e. what RotVLA feeds it. The
  projection itself is smooth there, so we give it its own backward. Writing
  U' = U diag(1,..,1,d) and sigma = diag(1,..,1,d) * s (signed singular values), R = U' V^T
  and a first-order perturbation gives dR = U' A V^T with
  A_kl = (P_kl - P_lk) / (sigma_k + sigma_l), P = U'^T dM V. By adjointness,
      dL/dM = U' [(G - G^T) / (sigma_k + sigma_l)] V^T,   G = U'^T (dL/dR) V,
  with the diagonal and any vanishing denominator (a rank-deficient input, where the
  projection is not unique) set to zero. This is the formula of roma's special_procrustes,
  O(n^3) per matrix. It is computed in float32 (float64 stays float64) with autocast off,
  so bf16 training does not lose orthogonality.
- Rotate6D is the first two COLUMNS of the rotation matrix, [r11 r21 r31 r12 r22 r32]
  (Zhou et al.'s convention and roma's). pytorch3d takes rows and X-VLA interleaves
  columns; data in those layouts must be converted before it reaches this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this, sigma_k + sigma_l is treated as zero in the backward (rank-deficient input).
_DENOMINATOR_EPS = 1e-12


def _svd_projection(m: torch.Tensor):
    u, s, vh = torch.linalg.svd(m)
    d = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    u = torch.cat([u[..., :-1], u[..., -1:] * d[..., None, None]], dim=-1)  # U' = U diag(1,..,1,d)
    sigma = torch.cat([s[..., :-1], s[..., -1:] * d[..., None]], dim=-1)
    return u @ vh, u, sigma, vh


class _ProjectToSOn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m):
        r, u, sigma, vh = _svd_projection(m)
        ctx.save_for_backward(u, sigma, vh)
        return r

    @staticmethod
    def backward(ctx, grad_r):
        u, sigma, vh = ctx.saved_tensors
        v = vh.transpose(-1, -2)
        g = u.transpose(-1, -2) @ grad_r @ v  # (..., n, n)
        denominator = sigma[..., :, None] + sigma[..., None, :]
        small = denominator.abs() < _DENOMINATOR_EPS
        k = (g - g.transpose(-1, -2)) / torch.where(small, torch.ones_like(denominator), denominator)
        k = k.masked_fill(small, 0.0)
        return u @ k @ vh


def project_to_so_n(m: torch.Tensor) -> torch.Tensor:
    """Closest rotation to each (..., n, n) matrix in Frobenius norm, in float32 (float64 if
    the input is float64), whatever the autocast state. A matrix with NaN/inf projects to
    all-NaN (the SVD would raise), so that callers' finiteness checks see it. No branch on
    the data: no host synchronisation."""
    compute_dtype = torch.float64 if m.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=m.device.type, enabled=False):
        m = m.to(compute_dtype)
        finite = torch.isfinite(m).all(dim=-1).all(dim=-1)  # (...,)
        eye = torch.eye(m.shape[-1], dtype=compute_dtype, device=m.device)
        r = _ProjectToSOn.apply(torch.where(finite[..., None, None], m, eye))
        return torch.where(finite[..., None, None], r, torch.full_like(r, float("nan")))


def compose(r2: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """The action ``r1`` followed by ``r2``: r2 @ r1 (paper Eq. 10)."""
    return r2 @ r1


def identity_anchor(identity_latents: torch.Tensor) -> torch.Tensor:
    """The identity element implied by latents of identical-frame pairs (paper Eq. 9):
    their batch mean projected onto SO(n). (B, ..., n, n) -> (..., n, n)."""
    return project_to_so_n(identity_latents.mean(dim=0))


def geodesic_distance(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Riemannian distance on SO(n): ||log(r1^T r2)||_F / sqrt(2), i.e. the root sum of
    squares of the rotation angles of the relative rotation (for n = 3, the usual angle).
    For evaluation: the eigen-decomposition it uses is not meant to be differentiated."""
    relative = (r1.transpose(-1, -2) @ r2).to(torch.float64)
    angles = torch.linalg.eigvals(relative).angle()  # (..., n), each plane's angle twice
    return torch.sqrt((angles**2).sum(dim=-1) / 2).to(r1.dtype)


def matrix_to_rot6d(r: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, [r11 r21 r31 r12 r22 r32]."""
    return torch.cat([r[..., :, 0], r[..., :, 1]], dim=-1)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two columns (Zhou et al. 2019)."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)
