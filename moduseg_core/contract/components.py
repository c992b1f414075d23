"""Building a run's components from a config, and describing them for manifests."""

from __future__ import annotations

import platform
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from moduseg_core.contract.config import Choice, RunConfig
from moduseg_core.contract.kinds import KINDS
from moduseg_core.contract.plugins import build_options, get_component, get_spec


@dataclass
class Built:
    """A component together with the choice and parsed options it came from."""

    kind: str
    name: str
    options: Any
    component: Any

    def describe(self) -> dict[str, Any]:
        spec = get_spec(self.kind, self.name)
        info = {"name": self.name, "options": self.options.identity(), "plugin": spec.plugin}
        if spec.oracle:
            info["oracle"] = True
        return info


def build(kind: str, choice: Choice) -> Built:
    options = build_options(kind, choice.name, choice.options)
    component = get_component(kind, choice.name, **options.model_dump())
    return Built(kind, choice.name, options, component)


def identity(kind: str, choice: Choice) -> dict[str, Any]:
    """What makes a component's output what it is: name + non-runtime options (validates them)."""
    options = build_options(kind, choice.name, choice.options)
    return {"name": choice.name, "options": options.identity()}


def validate(config: RunConfig, kinds: tuple[str, ...]) -> None:
    """Check every chosen name and option before any work starts (fail fast, one line)."""
    for kind in kinds:
        identity(kind, config.choice(kind))


def is_oracle(choice: Choice) -> bool:
    return get_spec("labeler", choice.name).oracle


def package_versions() -> dict[str, str]:
    """Versions of the libraries that shape results (read from metadata; nothing is imported)."""
    names = ("moduseg", "numpy", "torch", "transformers", "scikit-image", "faiss-cpu", "faiss-gpu", "onnx", "pillow")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass
class Timer:
    """Accumulates seconds per stage."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, value: float) -> None:
        with self._lock:  # stages run on more than one thread (moduseg_core.pipeline.streaming)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value


def describe_config(config: RunConfig) -> dict[str, Any]:
    """The config with each component's options validated and defaults filled in."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        choice = config.choice(kind)
        options = build_options(kind, choice.name, choice.options)
        out[kind] = {"name": choice.name, "options": options.model_dump(mode="json")}
        if kind == "labeler" and get_spec("labeler", choice.name).oracle:
            out[kind]["oracle"] = True
    out["method"] = config.method.model_dump(mode="json")
    out.update({k: getattr(config, k) for k in ("bank_split", "eval_split", "bank_limit", "eval_limit")})
    return out
