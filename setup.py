"""Installable package for okdhp_edge.

Full install (training, export, bench): ``pip install .``
Target devices without torch: ``OKDHP_EDGE_RUNTIME_ONLY=1 pip install .`` installs only the
runtime subset (numpy, OpenCV, pycocotools, PyYAML, ONNX Runtime, OpenVINO, matplotlib,
tqdm), enough for ``python -m okdhp_edge.bench --bundles`` and ``okdhp_edge.runtime``.
"""

import os

from setuptools import find_packages, setup

RUNTIME = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "pycocotools>=2.0.7",
    "pyyaml>=6.0",
    "onnxruntime>=1.17",
    "openvino>=2024.0",
    "matplotlib>=3.7",
    "tqdm>=4.60",
]
TRAINING = [
    "torch==2.13.0",
    "scipy>=1.10",
    "onnx>=1.15",
    "safetensors>=0.4",
    "psutil>=5.9",
    "py-cpuinfo>=9.0",
    "nncf>=2.14",  # OpenVINO INT8 (export only: the runtime runs quantized files without it)
]
RUNTIME_ONLY = os.environ.get("OKDHP_EDGE_RUNTIME_ONLY", "") not in ("", "0")

setup(
    name="okdhp_edge",
    version="0.1.0",
    description=("Online Knowledge Distillation for Human Pose: train a student zoo, "
                 "bench it on edge runtimes"),
    packages=find_packages(include=["okdhp_edge", "okdhp_edge.*"]),
    python_requires=">=3.10",
    install_requires=RUNTIME if RUNTIME_ONLY else RUNTIME + TRAINING,
    extras_require={
        "runtime": RUNTIME,
        # the engine builder supports TensorRT 10.x and 11.x (strongly typed networks);
        # torch-tensorrt follows the torch pin
        "tensorrt": ["tensorrt>=10.0,<12", "torch-tensorrt==2.13.0"],
        "dev": ["pytest>=7", "pytest-benchmark>=4", "ruff>=0.4", "hypothesis>=6"],
    },
    entry_points={
        "console_scripts": [
            "okdhp-train=okdhp_edge.train:cli",
            "okdhp-evaluate=okdhp_edge.evaluate:cli",
            "okdhp-synthetic=okdhp_edge.data.synthetic:cli",
            "okdhp-models=okdhp_edge.models.__main__:cli",
            "okdhp-bench=okdhp_edge.bench.__main__:cli",
            "okdhp-zoo=okdhp_edge.zoo:cli",
            "okdhp-quickstart=okdhp_edge.quickstart:cli",
            "okdhp-visualize=okdhp_edge.visualize:cli",
            "okdhp-experiments=okdhp_edge.experiments:cli",
        ]
    },
)
