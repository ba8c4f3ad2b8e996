"""Python package setup for deepaf_driver (built by colcon as an ament_python package)."""

from setuptools import find_packages, setup

PACKAGE = "deepaf_driver"

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
        "DeepAf camera and stage drivers: the virtual microscope (default "
        "backend) and optional hardware backends (OpenCV/V4L2, picamera2, "
        "Adafruit MotorKit, Sangaboard)."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera_node = deepaf_driver.camera_node:main",
            "stage_node = deepaf_driver.stage_node:main",
        ]
    },
)
