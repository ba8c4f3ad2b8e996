"""Python package setup for deepaf (built by colcon as an ament_python package).

The launch and parameter files are installed by deepaf_bringup.
"""

from setuptools import find_packages, setup

PACKAGE = "deepaf"

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
        "DeepAf: the node graph, its runner, the Python client, bags and the deepaf command line."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "deepaf = deepaf.cli:main",
        ]
    },
)
