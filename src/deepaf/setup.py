"""Python package setup for deepaf (built by colcon as an ament_python package)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "deepaf"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
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
    description=(
        "DeepAf bringup: launch files, parameter files, the node graph and the deepaf command line."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "deepaf = deepaf.cli:main",
        ]
    },
)
