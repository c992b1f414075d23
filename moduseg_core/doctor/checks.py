"""The pieces a component's checks are made of: a ``Check`` result and light probes.

Nothing here imports a heavy library. Packages are looked up with ``importlib.util.find_spec``
and ``importlib.metadata``; Hugging Face checkpoints are looked up in the local hub cache
(``HF_HUB_CACHE``, ``HF_HOME``) and, when the cache lacks them and the hub is not switched off
(``HF_HUB_OFFLINE``), by opening one TCP connection to the hub's host.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from moduseg_core.contract.plugins import module_found  # (plugins' checks import it from here too)


@dataclass(frozen=True)
class Check:
    """One thing a component needs: found (``ok``) with a short note, or missing with the exact fix."""

    ok: bool
    message: str
    fix: str = ""

    def text(self) -> str:
        if self.ok or not self.fix:
            return self.message
        return f"{self.message}; fix: {self.fix}"


def ok(message: str) -> Check:
    return Check(True, message)


def fail(message: str, fix: str) -> Check:
    return Check(False, message, fix)


def module_origin(module: str) -> Path | None:
    """The file or folder ``module`` would be imported from, or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.origin else None


def version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package(module: str, fix: str, *, distribution: str | None = None) -> Check:
    """``module`` importable (with its version when the distribution is known), or the install line."""
    if not module_found(module):
        return fail(f"{module} is not installed", fix)
    found = version(distribution or module)
    return ok(f"{module} {found}" if found else module)


def file_check(path: str | os.PathLike[str] | None, what: str, fix: str) -> Check:
    if path is None:
        return fail(f"{what} is not set", fix)
    target = Path(path).expanduser()
    if not target.is_file():
        return fail(f"{what} {str(path)!r} does not exist", fix)
    return ok(f"{what} {target}")


# -- the Hugging Face hub ----------------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (its own rules, without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "huggingface" / "hub"


def hf_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hf_cached_file(repo_id: str, filename: str, repo_type: str = "model") -> Path | None:
    """``filename`` of ``repo_id`` in the local hub cache (any snapshot), or None."""
    folder = hf_cache_dir() / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if not folder.is_dir():
        return None
    for snapshot in sorted(folder.iterdir()):
        candidate = snapshot / filename
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=4)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub's host (``HF_ENDPOINT``, default huggingface.co:443)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_model(model: str, what: str, *, filename: str = "config.json", alternative: str = "") -> Check:
    """A hub id or a local copy of a hub repository: present in a folder, in the cache, or downloadable now."""
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / filename).is_file():
            return ok(f"{what} {path}")
        return fail(
            f"{what} folder {model!r} has no {filename}", f"point it at a copy of the repository ({filename}, weights)"
        )
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        return fail(
            f"{what} {model!r} is neither a folder nor a Hugging Face id",
            f"use a hub id such as 'org/name' or an existing folder{alternative}",
        )
    cached = hf_cached_file(model, filename)
    if cached is not None:
        return ok(f"{what} {model} (cached)")
    download = f"`hf download {model}` on a connected machine and copy {hf_cache_dir()} here{alternative}"
    if hf_offline():
        return fail(f"{what} {model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set", download)
    if not hub_reachable():
        return fail(f"{what} {model} is not in the Hugging Face cache and the hub is unreachable", download)
    return ok(f"{what} {model} (not cached: downloaded on first use)")


def hf_dataset_file(repo_id: str, filename: str, what: str, fix: str) -> Check:
    """A file of a Hugging Face dataset repository in the local cache (no network: a dataset file is data)."""
    cached = hf_cached_file(repo_id, filename, "dataset")
    if cached is None:
        return fail(f"{what} is not set and {filename.rsplit('/', 1)[-1]} is not in the Hugging Face cache", fix)
    return ok(f"{what} {cached} (cached)")


# -- devices -----------------------------------------------------------------------------------------


def device_check(device: str, what: str) -> Check | None:
    """A component that asks for CUDA or MPS by name: is it there? (``auto`` and ``cpu`` ask nothing.)

    torch is imported only here, and only for such a component: nothing lighter can tell."""
    name = str(device)
    if not name.startswith(("cuda", "mps")):
        return None
    if not module_found("torch"):
        return fail(f"{what} asks for device {name} but torch is not installed", "pip install torch (a CUDA build)")
    import torch

    if name.startswith("mps"):
        available = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return (
            ok(f"device {name}")
            if available
            else fail(f"{what} asks for device mps, which this torch cannot use", f"--set {what}.device=auto")
        )
    if not torch.cuda.is_available():
        build = torch.version.cuda
        cause = "torch is a CPU build" if not build else f"torch (CUDA {build}) sees no GPU"
        return fail(
            f"{what} asks for device {name} but {cause}",
            f"run on a GPU machine with a CUDA torch, or --set {what}.device=auto",
        )
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        return fail(
            f"{what} asks for {name} but {torch.cuda.device_count()} GPU(s) are visible", f"--set {what}.device=cuda:0"
        )
    return ok(f"device {name} ({torch.cuda.get_device_name(index)})")
