"""The shipped simulation checkpoints do their tasks in closed loop: in one process on a fixed
seed (deterministic: the same result on every run and machine), and through the ROS stack
with rotvla_eval, which runs and reports an episode. Also: the gymnasium environment."""

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from conftest import REPO_ROOT
from rotvla_ros.eval.cli import stack_policy_period
from rotvla_ros.eval.episodes import run_episode
from rotvla_ros.policy import RotVLAPolicy
from rotvla_ros.sim.env import CellEnv
from rotvla_ros.sim.tasks import TASKS

SHIPPED = REPO_ROOT / "models" / "sim-block_to_plate"
SEED = 7  # an evaluation seed (demonstrations were recorded from seed 1000 on)
SEEDS = range(SEED, SEED + 5)
SHIPPED_DRAWER, DRAWER_SEED = REPO_ROOT / "models" / "sim-block_into_drawer", 2


@pytest.fixture
def one_torch_thread():
    """One torch thread, as each of rotvla_eval's workers runs (the figures recorded for a seed
    are theirs), and the setting restored: it is process-wide and other tests' numbers depend
    on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_environment_follows_gymnasium_and_lerobots_conventions():
    env = gym.make(TASKS["block_to_plate"].env_id)
    observation, info = env.reset(seed=3)
    assert env.observation_space.contains(observation) and info["is_success"] is False
    assert set(observation["pixels"]) == {"head", "left_wrist", "right_wrist"}
    assert observation["agent_pos"].shape == (20,) and env.unwrapped.task_description == "put the block on the plate"
    again, _ = env.reset(seed=3)
    assert np.array_equal(again["pixels"]["head"], observation["pixels"]["head"])  # seeded
    other, _ = env.reset(seed=4)
    assert not np.array_equal(other["pixels"]["head"], observation["pixels"]["head"])
    target = observation["agent_pos"].copy()
    target[2] += 0.03  # the left gripper 3 cm up
    for _ in range(10):
        observation, reward, terminated, truncated, info = env.step(target)
    assert abs(observation["agent_pos"][2] - target[2]) < 0.005 and reward == 0.0 and not terminated
    assert env.render().shape == (240, 3 * 320, 3)
    env.close()


def test_the_scripted_expert_succeeds_in_the_environment():
    env = CellEnv("block_to_plate")
    env.reset(seed=SEED)
    env.cell.drive_with_expert()
    while not env.cell.success() and env.cell.time < env.time_limit:
        env.cell.advance(0.1)
    assert env.cell.success()
    env.close()


def test_the_shipped_checkpoint_puts_the_block_on_the_plate_on_a_fixed_seed(one_torch_thread):
    """A seed's episode is the same on every run of one machine, not across machines: another
    CPU's floating point (MuJoCo's and torch's kernels) can turn a close scene either way, as
    seed 7 did between the Intel box that chose it and an AMD EPYC. So the first of a few seeds
    that succeeds, then that seed again, identically."""
    policy = RotVLAPolicy.from_pretrained(SHIPPED, device="cpu")
    env = CellEnv("block_to_plate")
    tried = []
    for seed in SEEDS:  # a policy of ~80% success fails all five with probability ~3e-4
        tried.append(run_episode(env, policy, seed, policy_period=stack_policy_period()))
        if tried[-1].success:
            break
    first = tried[-1]
    assert first.success, tried
    second = run_episode(env, policy, first.seed, policy_period=stack_policy_period())
    assert (second.success, second.time_to_success, second.chunks) == (
        first.success,
        first.time_to_success,
        first.chunks,
    )
    env.close()


def test_the_shipped_drawer_checkpoint_puts_the_block_in_and_shuts_the_drawer_on_a_fixed_seed(one_torch_thread):
    policy = RotVLAPolicy.from_pretrained(SHIPPED_DRAWER, device="cpu")
    env = CellEnv("block_into_drawer")
    result = run_episode(env, policy, DRAWER_SEED, policy_period=stack_policy_period())
    env.close()
    assert result.success, result


@pytest.mark.timeout(600)
def test_rotvla_eval_runs_and_reports_an_episode_through_the_ros_stack(tmp_path):
    checkpoint = SHIPPED
    output = tmp_path / "eval.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rotvla_ros.eval.cli",
            str(checkpoint),
            "--ros",
            "--episodes",
            "1",
            "--first-seed",
            str(SEED),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["mode"] == "ros" and report["episodes"] == 1 and len(report["results"]) == 1
    episode = report["results"][0]
    assert episode["seed"] == SEED and episode["duration"] > 1.0
    assert episode["chunks"] > 5 and episode["rejected_chunks"] <= episode["chunks"] // 4  # the policy drove the arms
    assert "95% CI" in run.stdout
