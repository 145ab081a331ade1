"""Where a body of the scene is and how fast it moves, read from MuJoCo's data (the tasks'
success tests and the experts' moves ask the same questions)."""

from __future__ import annotations

import mujoco
import numpy as np


def body_position(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> np.ndarray:
    """(3,) world position of body ``name``, m."""
    return data.xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)].copy()


def body_speed(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> float:
    """Linear speed of a free body ``name``, m/s."""
    joint = model.body_jntadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)]
    return float(np.linalg.norm(data.qvel[model.jnt_dofadr[joint] : model.jnt_dofadr[joint] + 3]))
