"""Issue 32 item 2: a policy is found from its checkpoint's config (``type``), as LeRobot finds
a policy's class from its config. A new architecture is one class and one registration: here a
toy that holds both end effectors where they are, registered in this file alone, is loaded
by the evaluation's machinery from a checkpoint directory and runs an in-process episode."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import Contract
from rotvla_ros.policy import CheckpointError, Policy, PolicyOutput, RotVLAPolicy, load_policy, register_policy


@register_policy("hold_still")
class HoldStill:
    """Every chunk: the end effectors' state now, for 8 steps."""

    uses_state = True

    def __init__(self, path):
        self.checkpoint_id = f"hold-still-{json.loads((Path(path) / 'config.json').read_text())['version']}"
        self.predictions = 0

    @property
    def contract(self) -> Contract:
        return Contract(0.1, 84, ("head",), DUAL_ARM_EEF_ACTION_NAMES)

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, expected_action_names=None, inference_mode=None):
        return cls(path)

    def prepare(self) -> float:
        return 0.0

    def fast_path(self) -> str:
        return ""

    def warmup_pass(self, index: int = 0) -> None:
        pass

    def predict(self, observation: dict, seed=None) -> PolicyOutput:
        self.predictions += 1
        state = np.asarray(observation["state"], dtype=np.float32)  # (20,): the action layout, both arms
        return PolicyOutput(np.tile(state, (8, 1)), np.zeros((0, 0, 0), np.float32), DUAL_ARM_EEF_ACTION_NAMES, 0.1)


def test_the_checkpoint_type_selects_the_class_and_the_evaluation_runs_it(tmp_path):
    from rotvla_ros.eval.episodes import run_episodes

    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "config.json").write_text(json.dumps({"type": "hold_still", "version": 3}))
    policy = load_policy(toy, device="cpu")
    assert isinstance(policy, HoldStill) and isinstance(policy, Policy) and policy.checkpoint_id == "hold-still-3"
    # RotVLA is the first entry; a checkpoint without a type (before the field) is one.
    assert isinstance(load_policy(REPO_ROOT / "models" / "tiny-random", device="cpu"), RotVLAPolicy)
    (result,) = run_episodes(str(toy), "block_to_plate", [0], policy_period=0.5, time_limit=3.0)
    assert result.chunks >= 5 and result.rejected_chunks == 0 and not result.success, result
    (toy / "config.json").write_text(json.dumps({"type": "diffusion_policy"}))
    with pytest.raises(CheckpointError, match="no policy of that type is installed"):
        load_policy(toy)
