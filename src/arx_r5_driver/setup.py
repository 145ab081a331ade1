from setuptools import find_packages, setup

PACKAGE = "arx_r5_driver"

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
    description="ARX R5 trajectory executor for RotVLA action chunks.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["executor = arx_r5_driver.executor_node:main"]},
)
