"""Connecting to Ray by Ray's own conventions (heavy: imports ray; only ``make_executor`` imports this).

In order: ``RAY_ADDRESS`` (a cluster's head, ``ray://`` included), the cluster ``ray start`` left
on this machine, else a local instance started here (on loopback) and stopped with this process.
A local instance gets one logical CPU more than the actors reserve, so Ray Data's own tasks are never
starved by actors that hold every CPU.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..config import RayConfig
from ..errors import ModusegError
from . import RAY_INSTALL


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ModusegError(
            f"--executor ray needs Ray, which is not installed here ({exc.name or exc}); install it with {RAY_INSTALL}, "
            "or use --executor local"
        ) from exc
    return ray


def connect(settings: RayConfig) -> None:
    """Join (or start) the Ray cluster this process works with; a cluster already joined is kept."""
    ray = import_ray()
    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": "error", "log_to_driver": True}
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # noqa: BLE001 (Ray raises ConnectionError, RuntimeError, ValueError...)
            raise ModusegError(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({type(exc).__name__}: {_first_line(exc)}); "
                "start it (`ray start --head`) or unset RAY_ADDRESS to run a local instance"
            ) from exc
    else:
        try:
            ray.init(address="auto", **quiet)  # the cluster `ray start` left on this machine
        except (ConnectionError, RuntimeError, ValueError):
            need = settings.actors * settings.num_cpus + 1
            ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(need)), _node_ip_address="127.0.0.1", **quiet)
    _quiet_data()


def _quiet_data() -> None:
    """Ray Data's own progress bars off: the job shows one bar of images."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def nodes_alive() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))
