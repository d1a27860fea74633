"""Build hook: the metadata is pyproject.toml. It also refuses, in one line and before pip
resolves anything, a 32-bit Arm OS: ONNX Runtime, OpenVINO and LiteRT publish no wheels for
it, and pip would otherwise try to compile numpy and OpenCV from source and fail minutes
later. (docs/arm.md: install a 64-bit OS on the board.)"""

import platform
import sys

from setuptools import setup

ARM32 = ("armv6l", "armv7l", "armv8l")  # uname -m of a 32-bit Arm user space


def check_machine(machine: str) -> None:
    if machine in ARM32:
        sys.exit(f"okdhp_edge: no 32-bit Arm ({machine}) wheels exist for ONNX Runtime, "
                 "OpenVINO or LiteRT; install a 64-bit (aarch64) OS on this board")


check_machine(platform.machine())
setup()
