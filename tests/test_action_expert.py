"""The unified action expert: structured attention, prefix reuse, flow matching."""

import torch

from rotvla_ros.model.action_expert import UnifiedActionExpert
from rotvla_ros.model.config import ActionExpertConfig, FlowMatchingConfig
from rotvla_ros.model.flow_matching import euler_sample, interpolate, sample_time


def _expert(**kwargs):
    torch.manual_seed(0)
    defaults = dict(context_dim=16, plan_tokens=4, plan_token_dim=9, action_horizon=6, action_dim=20)
    defaults.update(kwargs)
    expert = UnifiedActionExpert(ActionExpertConfig(dim=32, num_layers=3, num_heads=4), **defaults)
    # adaLN-Zero starts every block as the identity; give the gates weight so that attention
    # really moves information in this test.
    for module in expert.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.abs().sum() == 0:
            torch.nn.init.normal_(module.weight, std=0.2)
    return expert.eval()


def _inputs(batch=2):
    g = torch.Generator().manual_seed(1)
    prefix = torch.randn(batch, 7, 16, generator=g)
    mask = torch.ones(batch, 7, dtype=torch.bool)
    mask[1, -2:] = False  # padded instruction tokens
    return (
        prefix,
        mask,
        torch.randn(batch, 4, 9, generator=g),
        torch.randn(batch, 6, 20, generator=g),
        torch.rand(batch, generator=g),
    )


def test_latent_tokens_never_see_robot_action_tokens():
    expert = _expert()
    prefix, mask, plan, actions, t = _inputs()
    cache = expert.prefix_cache(prefix, mask)
    plan_v, action_v = expert(plan, actions, t, cache)
    plan_v2, action_v2 = expert(plan, actions + 5 * torch.randn_like(actions), t, cache)
    torch.testing.assert_close(plan_v2, plan_v, rtol=0, atol=1e-6)
    assert (action_v2 - action_v).abs().max() > 1e-2
    # Stage II (no action tokens at all) gives the same plan velocity: one plan path.
    plan_only, none = expert(plan, None, t, cache)
    assert none is None
    torch.testing.assert_close(plan_only, plan_v, rtol=0, atol=1e-5)


def test_robot_action_tokens_are_conditioned_on_the_latent_plan_and_the_prefix():
    expert = _expert()
    prefix, mask, plan, actions, t = _inputs()
    cache = expert.prefix_cache(prefix, mask)
    _, action_v = expert(plan, actions, t, cache)
    _, action_v_plan = expert(plan + torch.randn_like(plan), actions, t, cache)
    assert (action_v_plan - action_v).abs().max() > 1e-2
    other = expert.prefix_cache(prefix + torch.randn_like(prefix), mask)
    plan_v_prefix, action_v_prefix = expert(plan, actions, t, other)
    assert (action_v_prefix - action_v).abs().max() > 1e-2


def test_masked_prefix_tokens_are_ignored():
    expert = _expert()
    prefix, mask, plan, actions, t = _inputs()
    changed = prefix.clone()
    changed[1, -2:] += 100.0  # only the padded positions of sample 1
    a = expert(plan, actions, t, expert.prefix_cache(prefix, mask))
    b = expert(plan, actions, t, expert.prefix_cache(changed, mask))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def test_flow_matching_time_distribution_and_interpolation():
    config = FlowMatchingConfig()
    t = sample_time(20000, config)
    assert t.min() >= config.t_min and t.max() <= 1.0
    # Beta(1.5, 1) has mean 0.6: more weight on the noisy end, as in pi0.
    assert abs(t.mean().item() - (0.6 * (1 - config.t_min) + config.t_min)) < 0.01
    x, noise = torch.randn(4, 3), torch.randn(4, 3)
    x_t, target = interpolate(x, noise, torch.tensor([0.0, 1.0, 0.5, 0.25]))
    torch.testing.assert_close(x_t[0], x[0])
    torch.testing.assert_close(x_t[1], noise[1])
    torch.testing.assert_close(target, noise - x)
    # Integrating the exact velocity of a straight path from noise lands on the data.
    (landed,) = euler_sample(lambda xs, t: [noise - x], [noise], num_steps=10)
    torch.testing.assert_close(landed, x)


def test_the_expert_learns_a_two_dimensional_mixture_by_flow_matching():
    """Actions from an equal mixture of N((+-2, 0), 0.25^2); the sampler must reproduce
    both modes, their weights and their spread."""
    torch.manual_seed(0)
    expert = UnifiedActionExpert(
        ActionExpertConfig(dim=64, num_layers=2, num_heads=4),
        context_dim=8,
        plan_tokens=1,
        plan_token_dim=1,
        action_horizon=1,
        action_dim=2,
    )
    config = FlowMatchingConfig()
    optimiser = torch.optim.AdamW(expert.parameters(), lr=2e-3)
    batch = 256
    for _ in range(1200):
        cache = expert.prefix_cache(torch.zeros(batch, 1, 8), torch.ones(batch, 1, dtype=torch.bool))
        mode = torch.randint(0, 2, (batch,)) * 2 - 1.0
        actions = (torch.stack([2 * mode, torch.zeros(batch)], -1) + 0.25 * torch.randn(batch, 2))[:, None]
        plan = mode.view(batch, 1, 1)
        t = sample_time(batch, config)
        plan_t, plan_u = interpolate(plan, torch.randn_like(plan), t)
        actions_t, actions_u = interpolate(actions, torch.randn_like(actions), t)
        plan_v, actions_v = expert(plan_t, actions_t, t, cache)
        loss = ((plan_v - plan_u) ** 2).mean() + ((actions_v - actions_u) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    expert.eval()
    n = 2000
    with torch.no_grad():
        cache = expert.prefix_cache(torch.zeros(n, 1, 8), torch.ones(n, 1, dtype=torch.bool))
        plan, actions = euler_sample(
            lambda xs, t: list(expert(xs[0], xs[1], t, cache)), [torch.randn(n, 1, 1), torch.randn(n, 1, 2)], 10
        )
    a = actions[:, 0]
    right = a[:, 0] > 0
    assert 0.4 < right.float().mean() < 0.6
    for side, centre in ((right, 2.0), (~right, -2.0)):
        assert abs(a[side, 0].mean() - centre) < 0.3
        assert abs(a[side, 1].mean()) < 0.15
        assert 0.12 < a[side, 1].std() < 0.45
    # The plan's marginal is learned too: values near +-1 in equal shares.
    assert 0.4 < (plan > 0).float().mean() < 0.6
    assert (plan.abs() - 1).abs().median() < 0.25
