"""RotVLAPolicy: predict, checkpoints (round trip and every bad case), NaN refusal."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from rotvla_ros.model.config import tiny_config
from rotvla_ros.model.so_n import rot6d_to_matrix
from rotvla_ros.policy import (
    ActionNormalizer,
    CheckpointError,
    NonFiniteOutputError,
    ObservationError,
    RotVLAPolicy,
)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    config = tiny_config()
    rng = np.random.default_rng(0)
    normalizer = ActionNormalizer.from_data(config.action_names, rng.normal(size=(500, 20)) * 0.1 + 0.3)
    policy = RotVLAPolicy.from_config(config, normalizer, device="cpu")
    # adaLN-Zero starts every DiT block as the identity, so an untrained expert ignores the
    # observation; open the gates so that these tests see the whole input path.
    with torch.no_grad():
        for module in policy.model.expert.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.abs().sum() == 0:
                module.weight.normal_(std=0.05)
    return policy


@pytest.fixture(scope="module")
def saved(policy, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-test"
    policy.save_pretrained(path)
    return path


def test_predict_gives_a_chunk_of_the_configured_layout(policy):
    out = policy.predict(policy.dummy_observation(), seed=0)
    c = policy.config
    assert out.actions.shape == (c.action_horizon, 20) and out.actions.dtype == np.float32
    assert out.plan.shape == (c.plan_tokens, c.latent_dim, c.latent_dim)
    assert out.action_names == c.action_names and out.dt == c.dt
    assert np.isfinite(out.actions).all()
    # The latent plan is on SO(n); each arm's Rotate6D is a rotation's first two columns.
    plan = torch.from_numpy(out.plan)
    assert torch.allclose(plan @ plan.transpose(-1, -2), torch.eye(c.latent_dim).expand_as(plan), atol=1e-5)
    for start in (3, 13):
        rot6d = torch.from_numpy(out.actions[:, start : start + 6]).double()
        torch.testing.assert_close(
            rot6d_to_matrix(rot6d)[..., :2].transpose(-1, -2).flatten(-2), rot6d, atol=1e-5, rtol=0
        )
    for stage in ("preprocess", "vl_prefix", "denoise_step_0", "denoise_step_9", "denoise", "postprocess", "total"):
        assert out.timings[stage] >= 0


def test_seeded_sampling_is_reproducible_and_unseeded_is_not(policy):
    obs = policy.dummy_observation()
    np.testing.assert_array_equal(policy.predict(obs, seed=3).actions, policy.predict(obs, seed=3).actions)
    assert not np.array_equal(policy.predict(obs).actions, policy.predict(obs).actions)


def test_vision_language_prefix_is_computed_once_per_chunk(policy):
    calls = []
    handle = policy.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        policy.predict(policy.dummy_observation(), seed=0)
    finally:
        handle.remove()
    assert len(calls) == 1 and policy.config.flow.num_steps == 10


def test_instruction_changes_the_prediction(policy):
    obs = policy.dummy_observation("pick up the block and place it on the plate")
    other = dict(obs, instruction="stack the cups")
    assert not np.allclose(policy.predict(obs, seed=1).actions, policy.predict(other, seed=1).actions)


def test_bad_observations_raise_observation_error(policy):
    obs = policy.dummy_observation()
    missing = {"images": {k: v for k, v in obs["images"].items() if k != "head"}, "instruction": ""}
    with pytest.raises(ObservationError, match="head"):
        policy.predict(missing)
    wrong = {"images": dict(obs["images"], head=np.zeros((56, 56), np.uint8)), "instruction": ""}
    with pytest.raises(ObservationError, match="uint8 RGB"):
        policy.predict(wrong)


def test_images_of_another_size_are_resized(policy):
    big = {c: np.full((480, 640, 3), 128, np.uint8) for c in policy.config.camera_names}
    assert policy.predict({"images": big, "instruction": "x"}, seed=0).actions.shape[0] == policy.config.action_horizon


def test_nan_output_raises_instead_of_returning_actions(policy):
    weight = policy.model.expert.action_out.bias
    saved = weight.detach().clone()
    with torch.no_grad():
        weight[0] = float("nan")
    try:
        with pytest.raises(NonFiniteOutputError):
            policy.predict(policy.dummy_observation(), seed=0)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_save_and_load_round_trip_exactly(policy, saved):
    loaded = RotVLAPolicy.from_pretrained(saved, device="cpu")
    assert loaded.config == policy.config
    assert loaded.checkpoint_id.startswith("tiny-test-") and len(loaded.checkpoint_id) == len("tiny-test-") + 8
    for (name, a), (_, b) in zip(policy.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(loaded.normalizer.std, policy.normalizer.std)
    obs = policy.dummy_observation()
    np.testing.assert_array_equal(loaded.predict(obs, seed=5).actions, policy.predict(obs, seed=5).actions)
    # Saving again gives the same id: the id names the weights.
    assert loaded.save_pretrained(saved.parent / "tiny-test-copy").endswith(loaded.checkpoint_id[-8:])


def _copy(saved, tmp_path, name="bad"):
    import shutil

    target = tmp_path / name
    shutil.copytree(saved, target)
    return target


def test_missing_directory_and_missing_files(saved, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        RotVLAPolicy.from_pretrained(tmp_path / "nope")
    for name in ("config.json", "model.safetensors", "normalization.json", "backbone_config.json"):
        bad = _copy(saved, tmp_path, name)
        (bad / name).unlink()
        with pytest.raises(CheckpointError, match=f"missing {name}"):
            RotVLAPolicy.from_pretrained(bad)


def test_corrupt_and_truncated_weights(saved, tmp_path):
    bad = _copy(saved, tmp_path, "garbage")
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        RotVLAPolicy.from_pretrained(bad)
    bad = _copy(saved, tmp_path, "truncated")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        RotVLAPolicy.from_pretrained(bad)


def test_weights_of_another_architecture(saved, tmp_path):
    """Weights written by a model with other dimensions than config.json describes."""
    other = dataclasses.replace(tiny_config(), expert=dataclasses.replace(tiny_config().expert, dim=32))
    RotVLAPolicy.from_config(other).save_pretrained(tmp_path / "other")
    bad = _copy(saved, tmp_path)
    (bad / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="wrong shape"):
        RotVLAPolicy.from_pretrained(bad)


def test_incompatible_configs(saved, tmp_path):
    def edit(name, change):
        bad = _copy(saved, tmp_path, name)
        data = json.loads((bad / "config.json").read_text())
        change(data)
        (bad / "config.json").write_text(json.dumps(data))
        return bad

    cases = {
        "unknown_preset": (lambda d: d["model"].update(preset="rotvla-7b"), "unknown preset"),
        "unknown_field": (lambda d: d["model"].update(num_arms=3), "unknown RotVLAConfig fields"),
        "old_format": (lambda d: d.update(format_version=0), "format version"),
        "other_dims": (lambda d: d["model"]["expert"].update(num_layers=3), "missing tensors"),
    }
    for name, (change, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            RotVLAPolicy.from_pretrained(edit(name, change))
    bad = _copy(saved, tmp_path, "not_json")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        RotVLAPolicy.from_pretrained(bad)


def test_action_layout_must_match_the_robot_and_the_statistics(saved, tmp_path):
    single_arm = tuple(n for n in tiny_config().action_names if n.startswith("left/"))
    with pytest.raises(CheckpointError, match="does not match the robot"):
        RotVLAPolicy.from_pretrained(saved, expected_action_names=single_arm)
    bad = _copy(saved, tmp_path, "stats")
    stats = json.loads((bad / "normalization.json").read_text())
    stats["action"]["std"][0] = float("nan")
    (bad / "normalization.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="NaN"):
        RotVLAPolicy.from_pretrained(bad)
