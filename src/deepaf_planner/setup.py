"""Python package setup for deepaf_planner (built by colcon as an ament_python package)."""

from setuptools import find_packages, setup

PACKAGE = "deepaf_planner"

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
    maintainer="DeepAf maintainers",
    maintainer_email="maintainers@deepaf.invalid",
    description=(
        "DeepAf scan planner: serpentine whole-slide scan state machine, focus "
        "surface, focal-stack acquisition, stitching and the pyramidal slide "
        "writer."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "scan_planner = deepaf_planner.planner_node:main",
        ]
    },
)
