"""The RotVLA model (tensors in, tensors out): Stage II and Stage III from one module."""

import dataclasses

import pytest
import torch

from rotvla_ros.model.config import tiny_config
from rotvla_ros.model.rotvla import RotVLA, open_zero_gates


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


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_sampling_with_static_buffers_equals_the_reference_path(dtype, tolerance):
    """Issue 16: the sampling path (keys/values written into per-block buffers, the attention
    bias built once per chunk) gives the numbers of the plain path (concatenation and a boolean
    mask at every step), for several seeds and instructions."""
    from rotvla_ros.model.flow_matching import euler_sample

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), latent_planner=True)
    model = RotVLA(config).eval()
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: attention would not show
        for parameter in model.expert.parameters():
            parameter.normal_(0.0, 0.05)
    model = model.to(dtype)
    assert config.plan_tokens > 0  # the bias has something to hide: the plan never sees the actions
    for seed, instruction in [(0, "put the block on the plate"), (1, "close the drawer"), (2, "")]:
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand(1, len(config.camera_names), 3, config.image_size, config.image_size, generator=generator)
        ids, mask = model.backbone.tokenize([instruction])
        state = torch.randn(1, config.action_dim, generator=generator) if config.use_state else None
        with torch.no_grad():
            cache = model.encode_prefix(images.to(dtype), ids, mask, state)
            noise = model.initial_noise(1, "cpu", generator)
            plan, actions = model.sample(cache, noise)
            assert cache.sampling is None  # the caller's cache is left as it was

            def velocity(xs, t, cache=cache):
                plan_v, action_v = model.expert(xs[0], xs[1], t, cache)
                return [plan_v, action_v]

            reference = euler_sample(velocity, noise, config.flow.num_steps)
        torch.testing.assert_close(actions, reference[1], atol=tolerance, rtol=tolerance)
        n = config.latent_dim
        from rotvla_ros.model.so_n import project_to_so_n

        torch.testing.assert_close(
            plan, project_to_so_n(reference[0].unflatten(-1, (n, n))), atol=tolerance, rtol=tolerance
        )


def test_a_view_or_state_a_sample_lacks_is_masked_out_of_the_loss():
    """Issue 14, mixtures: a dataset without one of the model's cameras (human video: one view)
    or without its state gives blank inputs that must not matter. Changing what a masked view
    or state holds leaves that sample's loss as it was; unmasked, it changes it."""
    from rotvla_ros.model.flow_matching import FlowNoise

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), use_state=True)
    model = open_zero_gates(RotVLA(config)).eval()  # at initialisation the expert ignores its prefix
    size, views = config.image_size, len(config.camera_names)
    images = torch.rand(2, views, 3, size, size)
    ids, mask = model.backbone.tokenize(["put the block on the plate", "close the drawer"])
    plan = torch.randn(*model.plan_shape(2))
    actions = torch.randn(2, config.action_horizon, config.action_dim)
    state = torch.randn(2, config.action_dim)
    noise = FlowNoise(
        torch.rand(2), torch.randn(2, config.plan_tokens, config.latent_dim**2), torch.randn_like(actions)
    )
    view_mask = torch.ones(2, views, dtype=torch.bool)
    view_mask[0, 1:] = False  # sample 0 has its first view only
    state_mask = torch.tensor([False, True])

    def per_sample_loss(images, state, **masks):
        with torch.no_grad():
            return torch.stack(
                [
                    model.loss(
                        images[i : i + 1],
                        ids[i : i + 1],
                        mask[i : i + 1],
                        plan[i : i + 1],
                        actions[i : i + 1],
                        state[i : i + 1],
                        FlowNoise(noise.t[i : i + 1], noise.plan[i : i + 1], noise.actions[i : i + 1]),
                        **{k: v[i : i + 1] for k, v in masks.items()},
                    )["loss"]
                    for i in range(2)
                ]
            )

    masks = dict(view_mask=view_mask, state_mask=state_mask)
    reference = per_sample_loss(images, state, **masks)
    other_images, other_state = images.clone(), state.clone()
    other_images[0, 1:] = torch.rand_like(other_images[0, 1:])
    other_state[0] = torch.randn_like(other_state[0])
    assert torch.allclose(per_sample_loss(other_images, other_state, **masks), reference, atol=1e-6)
    unmasked = per_sample_loss(other_images, other_state)
    assert not torch.allclose(unmasked[0], per_sample_loss(images, state)[0], atol=1e-4)
    # In a batch, the masks act per sample: the batch's loss is the mean of the samples'.
    with torch.no_grad():
        batched = model.loss(images, ids, mask, plan, actions, state, noise, **masks)["loss"]
    assert torch.allclose(batched, reference.mean(), atol=1e-5)
