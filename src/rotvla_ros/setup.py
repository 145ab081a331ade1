from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "rotvla_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # launch/ and config/ live at the workspace root (symlinked here) and are installed
        # where `ros2 launch rotvla_ros bringup.launch.py` looks for them.
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py") + glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/config/train/sim", glob("config/train/sim/*.yaml")),
        # The shipped simulation checkpoints (models/sim-<task>): the simulated bringup's default.
        *[(f"share/{PACKAGE}/models/{Path(d).name}", sorted(glob(f"{d}/*"))) for d in sorted(glob("models/sim-*"))],
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RotVLA-ROS maintainers",
    maintainer_email="maintainers@rotvla-ros.dev",
    description="RotVLA vision-language-action policy on ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera_ingestion = rotvla_ros.nodes.camera_ingestion:main",
            "policy_node = rotvla_ros.nodes.entry_points:policy_node",
            "episode_recorder = rotvla_ros.nodes.episode_recorder:main",
            "rotvla_convert = rotvla_ros.data.convert:main",
            "rotvla_train = rotvla_ros.train.cli:main",
            "rotvla_eval = rotvla_ros.eval.cli:main",
            "rotvla_record = rotvla_ros.nodes.sim_episodes:main",
            "rotvla_ctl = rotvla_ros.nodes.rotvla_ctl:main",
            "rotvla_check = rotvla_ros.nodes.check:main",
            "rotvla_calibrate_latency = rotvla_ros.nodes.calibrate_latency:main",
            "rotvla_dagger = rotvla_ros.nodes.dagger:main",
            "rotvla_run = rotvla_ros.nodes.runner:main",
            "sim_node = rotvla_ros.nodes.sim_node:main",
            "status_monitor = rotvla_ros.nodes.status_monitor:main",
            "pattern_cameras = rotvla_ros.nodes.pattern_cameras:main",
        ]
    },
)
