"""Issue 32 items 1 and 2: a task and a policy are each one unit found through a registry.
A policy is found from its checkpoint's config (``type``), as LeRobot finds a policy's class
from its config; a task by its name. Here a toy policy (it holds both end effectors where
they are) and a toy task (the block onto a mark), registered in this file alone, are loaded
by the evaluation's machinery and run in-process episodes; the task's own expert does it."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from conftest import REPO_ROOT
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import Contract
from rotvla_ros.policy import (
    CheckpointError,
    Policy,
    PolicyOutput,
    RotVLAPolicy,
    load_policy,
    read_contract,
    register_policy,
)
from rotvla_ros.sim.bodies import body_position, body_speed
from rotvla_ros.sim.moves import PickAndPlace
from rotvla_ros.sim.scene import vec
from rotvla_ros.sim.tasks import BLOCK_HALF, TASKS, Task, TaskScene, register_task
from rotvla_ros.sim.tasks.base import block_xml, jitter_colour

MARK = np.array([0.33, 0.10, 0.001])


class BlockToMark(Task):
    """The block onto a flat mark 8-12 cm from it: the left arm, one pick and place."""

    name = "toy_block_to_mark"
    instruction = "put the block on the mark"
    arms = ("left",)
    env_id = "rotvla-test/BlockToMark-v0"
    time_limit = 20.0

    def sample(self, rng):
        block = np.array([0.33, rng.uniform(0.18, 0.22), BLOCK_HALF])
        mark = f'<body name="mark" pos="{vec(MARK)}"><geom type="cylinder" size="0.03 0.001" contype="0"/></body>'
        return TaskScene(
            self.name,
            self.instruction,
            block_xml("block", block, jitter_colour(rng, (0.2, 0.3, 0.9))) + mark,
            self.arms,
            {"block": block, "mark": MARK},
        )

    def success(self, model, data):
        block = body_position(model, data, "block")
        return bool(np.linalg.norm(block[:2] - MARK[:2]) < 0.02 and body_speed(model, data, "block") < 0.02)

    def moves(self, world):
        return [PickAndPlace("left", "block", MARK, BLOCK_HALF + 0.003, 0.045, 0.015, 0.03)]


@register_policy("hold_still")
class HoldStill:
    """Every chunk: the end effectors' state now, for 8 steps."""

    uses_state = True

    def __init__(self, path):
        self.checkpoint_id = f"hold-still-{json.loads((Path(path) / 'config.json').read_text())['version']}"
        self.predictions = 0

    @property
    def contract(self) -> Contract:
        return self.read_contract("")

    @classmethod
    def read_contract(cls, path) -> Contract:
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
    assert read_contract(toy) == policy.contract  # from the config alone (rotvla_check's way)
    assert read_contract(REPO_ROOT / "models" / "tiny-random").image_size == 84
    # RotVLA is the first entry; a checkpoint without a type (before the field) is one.
    assert isinstance(load_policy(REPO_ROOT / "models" / "tiny-random", device="cpu"), RotVLAPolicy)
    (result,) = run_episodes(str(toy), "block_to_plate", [0], policy_period=0.5, time_limit=3.0)
    assert result.chunks >= 5 and result.rejected_chunks == 0 and not result.success, result
    (toy / "config.json").write_text(json.dumps({"type": "diffusion_policy"}))
    with pytest.raises(CheckpointError, match="no policy of that type is installed"):
        load_policy(toy)


@pytest.fixture
def toy_task():
    """BlockToMark registered for one test (the registry is the process's: other tests'
    loops over every task must not meet it)."""
    register_task(BlockToMark)
    yield TASKS[BlockToMark.name]
    del TASKS[BlockToMark.name]
    gym.registry.pop(BlockToMark.env_id)


def test_a_task_registered_alone_is_found_by_the_evaluation_and_done_by_its_expert(toy_task, tmp_path):
    from rotvla_ros.eval.episodes import run_episodes
    from rotvla_ros.sim.env import CellEnv

    assert TASKS["toy_block_to_mark"].instruction == "put the block on the mark"
    toy = gym.make("rotvla-test/BlockToMark-v0").unwrapped  # its gymnasium id
    assert isinstance(toy, CellEnv) and toy.task == "toy_block_to_mark"
    toy.close()
    checkpoint = tmp_path / "toy"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"type": "hold_still", "version": 1}))
    (result,) = run_episodes(str(checkpoint), "toy_block_to_mark", [0], policy_period=0.5, time_limit=3.0)
    assert result.task == "toy_block_to_mark" and result.chunks >= 5 and not result.success, result

    env = CellEnv("toy_block_to_mark")
    env.reset(seed=0)
    env.cell.drive_with_expert()
    while not env.cell.success() and env.cell.time < env.time_limit:
        env.cell.advance(0.5)
    assert env.cell.success(), f"the expert did not put the block on the mark in {env.cell.time:.1f} s"
    env.close()
