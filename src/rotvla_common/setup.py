from setuptools import find_packages, setup

PACKAGE = "rotvla_common"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="RotVLA-ROS maintainers",
    maintainer_email="maintainers@rotvla-ros.dev",
    description="Action-space names and ROS node helpers shared by the RotVLA packages.",
    license="Apache-2.0",
)
