"""What a job's resumable records are keyed by: a prediction run's inputs (``prediction_key``) and the image files
themselves (``files_digest``). Shared by the local and the Ray prediction paths and by ``predict``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from moduseg_core.contract.components import identity
from moduseg_core.contract.config import RunConfig

#: The run folder's records of finished prediction chunks (``ray_predict.predict_on_ray``'s ``state``).
CHUNKS = "chunks"


def prediction_key(config: RunConfig, bank: Path, samples: list) -> dict[str, Any]:
    """What a run's predictions and scores depend on: the bank (its manifest), the inference
    components and numbers, the images and whether overlays are drawn."""
    return {
        "bank": hashlib.sha256(
            json.dumps(
                {k: v for k, v in json.loads((bank / "manifest.json").read_text()).items() if k != "created"},
                sort_keys=True,
            ).encode()
        ).hexdigest(),
        "components": {
            kind: identity(kind, config.choice(kind)) for kind in ("proposer", "encoder", "aggregator", "index")
        },
        "method": config.method.identity(),
        "images": hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest(),
        "files": files_digest([s.image_path for s in samples]),
        "batch": config.method.batch_images,
        "overlays": config.overlays,
    }


def files_digest(paths: list) -> str:
    """A hash of each file's path, size and modification time: a replaced image re-keys the records."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except (OSError, TypeError):
            h.update(f"{path}|missing\n".encode())
    return h.hexdigest()
