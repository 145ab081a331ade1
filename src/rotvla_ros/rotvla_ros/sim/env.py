"""The simulated cell as a gymnasium environment, driven through the executor's own
controller (chunk scheduler, IK, safety filter) exactly as the ROS stack drives it: one
process, sim time only, deterministic for a seed. ROS-free.

    import gymnasium as gym
    import rotvla_ros.sim.env  # registers the ids
    env = gym.make("rotvla/BlockToPlate-v0")
    observation, info = env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(action)  # info["is_success"]

Ids: ``rotvla/BlockToPlate-v0``, ``rotvla/BlockIntoDrawer-v0``, ``rotvla/CupStacking-v0``.

- Observation (LeRobot's gym conventions, as gym-aloha's): ``pixels``: the three D405 views
  (``head``, ``left_wrist``, ``right_wrist``), (H, W, 3) uint8 at the simulated cameras'
  resolution (config/sim.yaml); ``agent_pos``: the robot state (20,) of the contract
  (``rotvla_common.contract.eef_state`` per arm, left first). The instruction is
  ``env.unwrapped.task_description``. Nothing else of the simulation (object poses, the
  expert) is observed.
- Action: one step (20,) in the action layout, absolute EEF targets in each arm's base
  frame: the pose to reach one ``step_period`` later (the contract's alignment). Policies
  that make chunks use ``submit_chunk`` and ``advance`` instead, as the executor does.
- Reward 1 once the task is done (``terminated``); ``truncated`` at the task's time limit.
- ``render()``: the three views side by side (for videos of episodes).

The executor's parameters (limits, speed caps, blending, the arm bases) come from the same
ROS parameter files as the stack's (config/robot.yaml, config/sim.yaml).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from arx_r5_driver.chunks import ChunkRejected
from arx_r5_driver.configuration import NODE_NAME, build_controller, with_defaults
from arx_r5_driver.controller import DualArmController
from rotvla_common.action_space import CAMERA_NAMES, DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import DEFAULT_FPS, eef_state
from rotvla_common.parameters import read_parameter_files

from ..bringup import default_config_dir
from .experts import ExecutionNoise, NoisyOperator, ScriptedExpert
from .scene import SceneConfig, scene_of
from .shift import parse_shift
from .tasks import TASKS
from .world import SimWorld


class WorldArm:
    """One arm of a SimWorld behind the executor's backend interface (``ArmBackend``)."""

    def __init__(self, world: SimWorld, arm: str):
        self.world, self.arm = world, arm

    def read(self) -> tuple[np.ndarray, float]:
        return self.world.read(self.arm)

    def command(self, joints: np.ndarray, gripper: float) -> None:
        self.world.command(self.arm, joints, gripper)

    def gravity_compensation(self) -> None:
        raise NotImplementedError("the simulated arms have no compliant mode")

    def close(self) -> None:
        pass


class SimCell:
    """A SimWorld and the executor's controller stepped together on sim time: the controller
    at its control rate, the physics in between (as the sim node and the executor node do
    over topics)."""

    def __init__(
        self,
        task: str,
        seed: int,
        executor_values: dict,
        scene: SceneConfig,
        width: int,
        height: int,
        shift: frozenset[str] = frozenset(),
    ):
        self.world = SimWorld(task, seed, scene, shift=shift)
        self.width, self.height = width, height
        self.controller: DualArmController = build_controller(
            executor_values, lambda arm: WorldArm(self.world, arm), DUAL_ARM_EEF_ACTION_NAMES
        )
        self._cycles = 0  # control cycles since the start: cycle k runs at k * control_period
        self.controller.step(self.world.time)

    @property
    def time(self) -> float:
        return self.world.time

    def observation(self) -> dict:
        return {
            "pixels": {c: self.world.render(c, self.width, self.height) for c in CAMERA_NAMES},
            "agent_pos": self.state(),
        }

    def state(self) -> np.ndarray:
        """(20,) float32: the contract's state of each arm, measured."""
        parts = []
        for arm in self.controller.arms:
            joints, gripper = arm.backend.read()
            parts.append(eef_state(*arm.kinematics.fk(joints), gripper))
        return np.concatenate(parts).astype(np.float32)

    def submit_chunk(
        self,
        actions: np.ndarray,
        stamp: float,
        dt: float,
        now: float | None = None,
        sequence: int = 0,
        checkpoint_id: str = "",
    ) -> None:
        """Hand a chunk (H, 20) computed from the observation at ``stamp`` to the controller
        at ``now`` (default: the current sim time); raises ``ChunkRejected``."""
        actions = np.asarray(actions, dtype=np.float64)
        self.controller.submit(
            stamp=stamp,
            dt=dt,
            horizon=len(actions),
            action_names=DUAL_ARM_EEF_ACTION_NAMES,
            actions=actions,
            now=self.time if now is None else now,
            sequence=sequence,
            checkpoint_id=checkpoint_id,
        )

    def advance(self, seconds: float, on_cycle=None) -> None:
        """Run control cycles and physics for ``seconds`` of sim time."""
        period = self.controller.config.control_period
        end = self.time + seconds - 1e-9
        while self.time < end:
            self._cycles += 1
            self.world.step_to(self._cycles * period)
            cycle = self.controller.step(self.time)
            if on_cycle is not None:
                on_cycle(cycle)

    def drive_with_expert(self, start_delay: float = 0.0, noise: float = 0.0, seed: int = 0) -> NoisyOperator:
        """Let the task's scripted expert drive the arms (as the executor's teleop source), with
        ``noise`` rad of execution noise drawn from ``seed`` (none by default)."""
        expert = ScriptedExpert(
            self.world, {arm.name: arm.kinematics for arm in self.controller.arms}, self.time + start_delay
        )
        operator = NoisyOperator(expert, ExecutionNoise(noise, seed))
        self.controller.set_teleop(operator)
        return operator

    def success(self) -> bool:
        return self.world.success()

    def render(self) -> np.ndarray:
        return np.concatenate([self.world.render(c, self.width, self.height) for c in CAMERA_NAMES], axis=1)

    def close(self) -> None:
        self.world.close()


def cell_parameters(config_dir: Path | None = None) -> tuple[dict, dict]:
    """(executor parameters, sim parameters) of the simulated stack, from its parameter files."""
    config_dir = Path(config_dir or default_config_dir())
    files = [config_dir / "robot.yaml", config_dir / "sim.yaml"]
    return with_defaults(read_parameter_files(files, NODE_NAME)), read_parameter_files(files, "sim")


class CellEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": DEFAULT_FPS}

    def __init__(
        self,
        task: str = "block_to_plate",
        render_mode: str | None = "rgb_array",
        step_period: float = 1.0 / DEFAULT_FPS,
        time_limit: float | None = None,
        config_dir: str | None = None,
        shift: frozenset[str] | str = frozenset(),
    ):
        """``shift``: domain shift of every scene (``sim.shift``: kinds, or their words)."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, not {task!r}")
        self.task = task
        self.shift = parse_shift(shift) if isinstance(shift, str) else frozenset(shift)
        self.render_mode = render_mode
        self.step_period = step_period
        self.time_limit = time_limit or TASKS[task].time_limit
        self.task_description = TASKS[task].instruction
        self.executor_values, sim_values = cell_parameters(config_dir)
        self.width, self.height = int(sim_values.get("width", 320)), int(sim_values.get("height", 240))
        self.scene = scene_of(self.executor_values)
        image = gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Dict({c: image for c in CAMERA_NAMES}),
                "agent_pos": gym.spaces.Box(-np.inf, np.inf, (len(DUAL_ARM_EEF_ACTION_NAMES),), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (len(DUAL_ARM_EEF_ACTION_NAMES),), np.float32)
        self.cell: SimCell | None = None
        self.seed_used: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.cell is not None:
            self.cell.close()
        # The scene's own randomisation takes an integer seed: the one given, else one from
        # the environment's generator (itself seeded by the first reset's seed).
        self.seed_used = int(seed) if seed is not None else int(self.np_random.integers(2**31))
        self.cell = SimCell(
            self.task, self.seed_used, self.executor_values, self.scene, self.width, self.height, self.shift
        )
        return self.cell.observation(), {"is_success": False, "seed": self.seed_used}

    def step(self, action):
        cell = self._cell()
        now = cell.time
        action = np.asarray(action, dtype=np.float64).reshape(1, -1)
        try:
            cell.submit_chunk(action, stamp=now, dt=self.step_period)  # due at now + step_period
            rejected = ""
        except ChunkRejected as rejection:  # the arms hold; the caller sees why
            rejected = str(rejection)
        cell.advance(self.step_period)
        success = cell.success()
        truncated = not success and cell.time >= self.time_limit - 1e-9
        info = {"is_success": success, "time": cell.time, "rejected": rejected}
        return cell.observation(), float(success), success, truncated, info

    def render(self):
        return self._cell().render()

    def close(self):
        if self.cell is not None:
            self.cell.close()
            self.cell = None

    def _cell(self) -> SimCell:
        if self.cell is None:
            raise RuntimeError("call reset() first")
        return self.cell
