"""The RotVLA model (tensors in, tensors out): Stage II and Stage III from one module."""

import dataclasses

import pytest
import torch

from rotvla_ros.model.config import tiny_config
from rotvla_ros.model.rotvla import RotVLA


@pytest.mark.parametrize("mode", ["stage2", "stage3"])
def test_training_loss_and_sampling_in_both_stages(mode):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), mode=mode)
    model = RotVLA(config)
    images = torch.rand(2, 3, 3, config.image_size, config.image_size)
    ids, mask = model.backbone.tokenize(["pick up the block", "stack the cups"])
    n = config.latent_dim
    plan = torch.linalg.qr(torch.randn(2, config.plan_tokens, n, n))[0]
    actions = torch.randn(2, config.action_horizon, config.action_dim) if mode == "stage3" else None
    losses = model.loss(images, ids, mask, plan, actions)
    assert ("action_loss" in losses) == (mode == "stage3")
    losses["loss"].backward()
    assert model.expert.plan_in.weight.grad is not None
    # The backbone is trained too (the X-VLA schedule lowers its learning rate, not to zero).
    assert model.backbone.model.language_model.layers[0].mlp.up_proj.weight.grad is not None
    model.eval()
    sampled_plan, sampled_actions = model.sample(model.encode_prefix(images, ids, mask), model.initial_noise(2, "cpu"))
    assert sampled_plan.shape == (2, config.plan_tokens, n, n)
    assert torch.allclose(torch.linalg.det(sampled_plan), torch.ones(2, config.plan_tokens), atol=1e-4)
    assert (sampled_actions is None) == (mode == "stage2")


def test_stage3_requires_robot_actions_and_unknown_modes_are_refused():
    model = RotVLA(tiny_config())
    size = model.config.image_size
    images = torch.rand(1, 3, 3, size, size)
    ids, mask = model.backbone.tokenize(["x"])
    with pytest.raises(ValueError, match="robot actions"):
        model.loss(images, ids, mask, torch.eye(4).expand(1, 4, 4, 4))
    with pytest.raises(ValueError, match="unknown mode"):
        RotVLA(dataclasses.replace(tiny_config(), mode="stage4"))


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """Issue 14: memory for compute, never other numbers."""
    from rotvla_ros.model.flow_matching import FlowNoise

    torch.manual_seed(0)
    config = tiny_config()
    model = RotVLA(config).train()
    images = torch.rand(2, len(config.camera_names), 3, config.image_size, config.image_size)
    ids, mask = model.backbone.tokenize(["put the block on the plate", "close the drawer"])
    plan = torch.randn(*model.plan_shape(2))
    actions = torch.randn(2, config.action_horizon, config.action_dim)
    noise = FlowNoise(
        torch.rand(2), torch.randn(2, config.plan_tokens, config.latent_dim**2), torch.randn_like(actions)
    )
    state = torch.randn(2, config.action_dim) if config.use_state else None

    saved = []  # bytes the forward keeps for backward

    def keep(tensor):
        saved[-1] += tensor.numel() * tensor.element_size()
        return tensor

    def gradients():
        model.zero_grad()
        saved.append(0)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            loss = model.loss(images, ids, mask, plan, actions, state, noise)["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, plain = gradients()
    model.set_activation_checkpointing(True)
    checkpointed_loss, checkpointed = gradients()
    assert saved[1] < 0.7 * saved[0], saved  # it does keep less
    assert torch.allclose(loss, checkpointed_loss) and plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name
