"""Python package setup for deepaf_bringup (built by colcon as an ament_python package).

It installs data only: launch/ and config/ (symlinks to the repository's launch/ and config/)
into share/deepaf_bringup. The launch files build the graph with `deepaf.graph_launch`.
"""

from pathlib import Path

from setuptools import setup

PACKAGE = "deepaf_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(str(p) for p in Path("launch").glob("*.py"))),
        (f"share/{PACKAGE}/config", sorted(str(p) for p in Path("config").glob("*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="DeepAf maintainers",
    maintainer_email="maintainers@deepaf.invalid",
    description="DeepAf bringup: launch files and parameter files of the node graph.",
    license="Apache-2.0",
)
