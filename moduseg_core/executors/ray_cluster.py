"""Connecting to Ray by Ray's own conventions (heavy: imports ray; only ``make_executor`` imports this).

In order: ``RAY_ADDRESS`` (a cluster's head, ``ray://`` included; ``local`` for a new local
instance), a cluster running on this machine (``ray start``: Ray's ``auto``), else a local instance started
here (on loopback) and stopped with this process.
A local instance gets one logical CPU more than the actors reserve, so Ray Data's own tasks are never
starved by actors that hold every CPU.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from moduseg_core.contract.config import RayConfig
from moduseg_core.contract.errors import ModusegError

RAY_INSTALL = "pip install 'moduseg[ray]'"
#: Ray's switch that, off, makes a node take the loopback address instead of the machine's.
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> Any:
    address = os.environ.get("RAY_ADDRESS") or ""
    if "ray" not in sys.modules and (address == "local" or (not address and not _cluster_here())):
        # a local instance started here listens on loopback only (Ray reads this when it is imported)
        os.environ.setdefault(LOOPBACK, "0")
    try:
        import ray
        import ray.data  # Ray Data too: the executors' datasets
    except ImportError as exc:
        raise ModusegError(
            f"--executor ray needs Ray, which is not installed here ({exc.name or exc}); install it with "
            f"{RAY_INSTALL}, "
            "or use --executor local"
        ) from exc
    return ray


def _cluster_here() -> bool:
    """Whether ``ray start`` left a cluster address on this machine (what Ray's ``auto`` reads first)."""
    import tempfile

    root = Path(os.environ.get("RAY_TMPDIR") or Path(tempfile.gettempdir()) / "ray")
    return (root / "ray_current_cluster").is_file()


def connect(settings: RayConfig) -> None:
    """Join (or start) the Ray cluster this process works with; a cluster already joined is kept."""
    ray = import_ray()
    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": "error", "log_to_driver": True}
    address = os.environ.get("RAY_ADDRESS") or None
    if address == "local":  # Ray's word for "a new local instance", whatever runs on this machine
        address = None
        _start_local(ray, settings, quiet)
    elif address is not None:
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise ModusegError(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({type(exc).__name__}: {_first_line(exc)}); "
                "start it (`ray start --head`) or unset RAY_ADDRESS to run a local instance"
            ) from exc
    else:
        try:
            ray.init(address="auto", **quiet)  # the cluster `ray start` left on this machine
        except (ConnectionError, RuntimeError, ValueError):
            _start_local(ray, settings, quiet)
    _quiet_data()


def _start_local(ray: Any, settings: RayConfig, quiet: dict[str, Any]) -> None:
    need = settings.actors * settings.num_cpus + 1
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(need)), **quiet)


def worker_env(threads: int) -> dict[str, Any]:
    """The actors' ``runtime_env``: the driver's ``MODUSEG_*`` settings (plugins, caches, crash points of
    the tests) and the CPU thread count that keeps their floats the local executor's."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MODUSEG_")}
    return {"env_vars": env | {"OMP_NUM_THREADS": str(threads)}}


#: How long a job waits for its whole actor pool before it starts (Ray Data's ``wait_for_min_actors_s``):
#: work starts on every worker at once, and a cluster too small for the pool fails instead of hanging.
WAIT_FOR_ACTORS_S = 900


def _quiet_data() -> None:
    """Ray Data's own progress bars off (the job shows one bar of images); the pool complete before work starts."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.wait_for_min_actors_s = WAIT_FOR_ACTORS_S
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def nodes_alive() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def absolute(samples: Any) -> list:
    """The samples with absolute paths: workers on other nodes do not share the driver's working folder."""
    import dataclasses

    def whole(path: Any) -> Any:
        return Path(os.path.abspath(path)) if path is not None else None

    return [dataclasses.replace(s, image_path=whole(s.image_path), mask_path=whole(s.mask_path)) for s in samples]
