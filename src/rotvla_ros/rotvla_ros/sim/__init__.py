"""The simulated dual-arm ARX R5 (MuJoCo): the scene, the three tasks of the paper's
appendix D with success detectors, rendered cameras, scripted experts. ROS-free."""

import os

# Offscreen rendering before anything imports mujoco: OSMesa on CPU (Debian's libosmesa6),
# MUJOCO_GL=egl where a GPU is.
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
