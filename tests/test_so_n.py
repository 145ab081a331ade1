"""SO(n) maths: projection, its gradient where plain SVD autograd fails, Rotate6D."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from rotvla_ros.model.so_n import (
    compose,
    geodesic_distance,
    identity_anchor,
    matrix_to_rot6d,
    project_to_so_n,
    rot6d_to_matrix,
)


@pytest.mark.parametrize("n", [3, 8, 16, 32])
def test_projection_is_orthonormal_with_det_one(n):
    m = torch.randn(64, n, n, generator=torch.Generator().manual_seed(n))
    r = project_to_so_n(m)
    eye = torch.eye(n).expand_as(r)
    assert torch.allclose(r @ r.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(64), atol=1e-5)


def test_projection_equals_the_brute_force_closest_rotation_for_n3():
    """For n = 3 the closest rotation is also the solution of Wahba's problem, which
    scipy's align_vectors solves independently (Kabsch on the matrix's rows)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.normal(size=(3, 3))
        ours = project_to_so_n(torch.from_numpy(m)).numpy()
        # argmax_R tr(R^T M) = argmin_R ||R - M||_F; align_vectors maximises sum_i a_i . R b_i.
        reference, _ = Rotation.align_vectors(m.T, np.eye(3))
        np.testing.assert_allclose(ours, reference.as_matrix(), atol=1e-9)
        # And no sampled rotation is closer.
        samples = Rotation.random(2000, random_state=1).as_matrix()
        assert np.linalg.norm(ours - m) <= np.linalg.norm(samples - m, axis=(1, 2)).min() + 1e-12


def test_projection_under_bf16_autocast_is_float32_and_orthonormal():
    m = torch.randn(8, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = project_to_so_n(m.bfloat16())
    assert r.dtype == torch.float32
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(16).expand_as(r), atol=1e-5)


def _degenerate_inputs(n):
    rotation = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    if torch.linalg.det(rotation) < 0:
        rotation[:, 0] *= -1
    near = torch.eye(n, dtype=torch.float64) + 1e-9 * torch.randn(n, n, dtype=torch.float64)
    return {
        "identity": torch.eye(n, dtype=torch.float64),
        "2I": 2 * torch.eye(n, dtype=torch.float64),
        "rotation": rotation,
        "near_identity": near,
    }


@pytest.mark.parametrize("name", ["identity", "2I", "rotation", "near_identity"])
def test_gradient_is_finite_where_plain_svd_autograd_is_not(name):
    m = _degenerate_inputs(6)[name].requires_grad_(True)
    weights = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (project_to_so_n(m) * weights).sum().backward()
    assert torch.isfinite(m.grad).all()
    # The reason the custom backward exists: autograd through svd gives NaN/inf here.
    if name in ("identity", "2I", "rotation"):
        plain = m.detach().clone().requires_grad_(True)
        u, _, vh = torch.linalg.svd(plain)
        ((u @ vh) * weights).sum().backward()
        assert not torch.isfinite(plain.grad).all()


def test_gradient_at_the_identity_matches_finite_differences():
    """At I the projection's derivative is the skew part: dR = (dM - dM^T) / 2."""
    m = torch.eye(5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 5, dtype=torch.float64)
    (project_to_so_n(m) * g).sum().backward()
    torch.testing.assert_close(m.grad, (g - g.T) / 2)


def test_gradcheck_general_and_reflected_inputs():
    generator = torch.Generator().manual_seed(3)
    m = torch.randn(3, 5, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(project_to_so_n, (m,))
    reflected = torch.randn(5, 5, dtype=torch.float64, generator=generator)
    if torch.linalg.det(reflected) > 0:
        reflected[0] *= -1  # det(M) < 0: the projection flips the smallest singular direction
    assert torch.autograd.gradcheck(project_to_so_n, (reflected.requires_grad_(True),))


def test_compose_identity_anchor_and_geodesic_distance():
    r = Rotation.random(2, random_state=4).as_matrix()
    r1, r2 = torch.from_numpy(r[0]), torch.from_numpy(r[1])
    torch.testing.assert_close(compose(r2, r1), r2 @ r1)
    # For n = 3 the geodesic distance is the angle of the relative rotation.
    expected = (Rotation.from_matrix(r[0]).inv() * Rotation.from_matrix(r[1])).magnitude()
    assert abs(geodesic_distance(r1, r2).item() - expected) < 1e-9
    assert geodesic_distance(r1, r1).item() < 1e-6
    # Noisy latents of "no motion" around I anchor to I.
    noisy = torch.eye(4) + 0.05 * torch.randn(64, 4, 4, generator=torch.Generator().manual_seed(5))
    assert geodesic_distance(identity_anchor(noisy), torch.eye(4)).item() < 0.05


def test_rot6d_is_the_first_two_columns_and_round_trips():
    matrices = torch.from_numpy(Rotation.random(100, random_state=6).as_matrix())
    rot6d = matrix_to_rot6d(matrices)
    torch.testing.assert_close(rot6d[:, :3], matrices[:, :, 0])
    torch.testing.assert_close(rot6d[:, 3:], matrices[:, :, 1])
    torch.testing.assert_close(rot6d_to_matrix(rot6d), matrices)
    # A perturbed 6D vector maps to a proper rotation (Gram-Schmidt).
    r = rot6d_to_matrix(rot6d + 0.1 * torch.randn_like(rot6d))
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3, dtype=r.dtype).expand_as(r))
    assert torch.allclose(torch.linalg.det(r), torch.ones(100, dtype=r.dtype))


def test_non_finite_matrices_project_to_nan_without_touching_the_others():
    m = torch.randn(3, 4, 4)
    m[1, 2, 2] = float("nan")
    r = project_to_so_n(m)
    assert torch.isnan(r[1]).all()
    torch.testing.assert_close(r[[0, 2]], project_to_so_n(m[[0, 2]]))
