"""Where the per-image work runs: in this process (``local``) or on a Ray cluster (``ray``).

An executor takes the images a job still has to do and hands back, in the driver, one result per
image as it finishes (in any order): the shard it wrote (``store.ShardStore``) or its failure. The
driver (``bank_job``) keeps the manifest of finished images, applies ``on_error``, and assembles the
bank in canonical order, so the result does not depend on the executor, the number of workers or
the order they finish in.

``ray`` is imported only when a Ray executor is made (``moduseg --help`` never loads it).
"""

from __future__ import annotations

from typing import Any

from moduseg_core.contract.config import EXECUTORS, RunConfig
from moduseg_core.contract.errors import ModusegError


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        from moduseg_core.contract.errors import did_you_mean

        raise ModusegError(
            f"--executor {name!r} is unknown{did_you_mean(name, EXECUTORS)} (allowed: {', '.join(EXECUTORS)}); "
            "pass --executor local or --executor ray"
        )
    return name


def make_executor(config: RunConfig) -> Any:
    """The executor ``config.executor`` names (Ray's is connected to its cluster here, before any output is written)."""
    check_executor(config.executor)
    if config.executor == "local":
        from moduseg_core.executors.local import LocalExecutor

        return LocalExecutor(config)
    from moduseg_core.executors.ray_cluster import connect

    connect(config.ray)
    from moduseg_core.executors.ray_bank import RayExecutor

    return RayExecutor(config)
