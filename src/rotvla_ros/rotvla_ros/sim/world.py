"""A simulated cell: the scene of one task, stepped in time, commanded like the R5's joint
position controller, rendered from its cameras. ROS-free."""

from __future__ import annotations

import mujoco
import numpy as np

from arx_r5_driver import configuration
from arx_r5_driver.kinematics import GRIPPER_MAX_OPENING_M, JOINT_NAMES

from .scene import FINGER_TRAVEL, SceneConfig, build_mjcf, robot_scene
from .shift import shifted_look
from .tasks import TASKS, TaskScene

HOME_JOINTS = np.array(configuration.HOME_JOINTS)  # the executor's start pose


class SimWorld:
    def __init__(
        self,
        task: str,
        seed: int = 0,
        config: SceneConfig | None = None,
        initial_joints=HOME_JOINTS,
        shift: frozenset[str] = frozenset(),
    ):
        """``shift``: kinds of domain shift (``sim.shift.SHIFT_KINDS``) drawn from the seed."""
        self.config = config or robot_scene()
        self.task = TASKS[task]
        rng = np.random.default_rng(seed)
        self.scene: TaskScene = self.task.sample(rng)
        self.shift = frozenset(shift)
        self.look = shifted_look(self.shift, seed, self.scene.positions)
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.config, self.scene.xml, self.look))
        self.data = mujoco.MjData(self.model)
        self.arm_names = tuple(mount.name for mount in self.config.arms)
        name = lambda kind, n: mujoco.mj_name2id(self.model, kind, n)  # noqa: E731
        self._qpos = {
            arm: np.array([self.model.jnt_qposadr[name(mujoco.mjtObj.mjOBJ_JOINT, f"{arm}_{j}")] for j in JOINT_NAMES])
            for arm in self.arm_names
        }
        self._fingers = {
            arm: np.array([self.model.jnt_qposadr[name(mujoco.mjtObj.mjOBJ_JOINT, f"{arm}_finger_{s}")] for s in "ab"])
            for arm in self.arm_names
        }
        self._ctrl = {
            arm: np.array([name(mujoco.mjtObj.mjOBJ_ACTUATOR, f"{arm}_{j}") for j in JOINT_NAMES])
            for arm in self.arm_names
        }
        self._finger_ctrl = {
            arm: np.array([name(mujoco.mjtObj.mjOBJ_ACTUATOR, f"{arm}_finger_{s}") for s in "ab"])
            for arm in self.arm_names
        }
        for arm in self.arm_names:
            self.data.qpos[self._qpos[arm]] = initial_joints
            self.command(arm, initial_joints, GRIPPER_MAX_OPENING_M)
            self.data.qpos[self._fingers[arm]] = FINGER_TRAVEL
        self.task.initialise(self.model, self.data, rng)
        mujoco.mj_forward(self.model, self.data)
        self._renderer: mujoco.Renderer | None = None

    @property
    def time(self) -> float:
        return float(self.data.time)

    def command(self, arm: str, joints: np.ndarray, gripper: float) -> None:
        """Joint position targets (6,) and gripper opening (m) of one arm."""
        self.data.ctrl[self._ctrl[arm]] = joints
        self.data.ctrl[self._finger_ctrl[arm]] = np.clip(gripper, 0.0, GRIPPER_MAX_OPENING_M) / 2

    def read(self, arm: str) -> tuple[np.ndarray, float]:
        """Joint positions (6,) and gripper opening (m) of one arm. The opening is read as the
        R5's gripper encoder reads it, inside its 0-80 mm: MuJoCo's joint limits are soft, and
        a finger pressed by contact goes centimetres past its stop (stiffening the stops
        changed how the experts' grasps end, so the physics is left as the demonstrations had it)."""
        opening = float(self.data.qpos[self._fingers[arm]].sum())
        return self.data.qpos[self._qpos[arm]].copy(), min(max(opening, 0.0), GRIPPER_MAX_OPENING_M)

    def step_to(self, time: float) -> int:
        """Advance the physics to ``time`` (s of sim time); returns the steps taken."""
        steps = max(0, int(round((time - self.data.time) / self.model.opt.timestep)))
        if steps:
            mujoco.mj_step(self.model, self.data, nstep=steps)
        return steps

    def success(self) -> bool:
        return self.task.success(self.model, self.data)

    def render(self, camera: str, width: int, height: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB from ``camera`` (head, left_wrist, right_wrist)."""
        if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = mujoco.Renderer(self.model, height, width)
        # mj_step leaves the bodies' poses as they were at the start of its last substep: pose
        # the bodies (and the cameras on them) at the current state, which the frame is stamped
        # with. Positions only: the solver's warm start is untouched, so the physics is too.
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        self._renderer.update_scene(self.data, camera)
        return self._renderer.render()

    def camera_intrinsics(self, camera: str, width: int, height: int) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy of a pinhole camera (MuJoCo's fovy is vertical)."""
        fovy = np.radians(self.model.cam_fovy[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)])
        f = 0.5 * height / np.tan(fovy / 2)
        return f, f, (width - 1) / 2, (height - 1) / 2

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
