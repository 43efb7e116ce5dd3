"""A clear ImportError when an optional framework is missing."""

from __future__ import annotations

import importlib


def require(module: str, extra: str, package: str) -> None:
    """Import ``module`` or raise an ImportError naming the install command.

    Args:
        module: the framework's import name, e.g. ``"langchain_core"``.
        extra: the extra of ``vllm-pool`` that installs it, e.g. ``"langchain"``.
        package: the PyPI name of the framework, e.g. ``"langchain-core"``.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"vllm_pool.integrations.{extra} needs {package}: "
            f'pip install "vllm-pool[{extra}]" (or pip install {package})'
        ) from exc
