"""Python package setup for deepaf_focus (built by colcon as an ament_python package)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "deepaf_focus"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (
            f"share/{PACKAGE}/models",
            sorted(str(p) for p in Path("models").glob("*") if p.is_file()),
        ),
        (f"share/{PACKAGE}/config", sorted(str(p) for p in Path("config").glob("*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="DeepAf maintainers",
    maintainer_email="maintainers@deepaf.invalid",
    description=(
        "DeepAf single-shot autofocus: the spatio-spectral network, training, "
        "evaluation, classical baselines, predictor and the PredictFocus action "
        "server."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "focus_server = deepaf_focus.focus_server:main",
        ]
    },
)
