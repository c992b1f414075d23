"""The import paths of the modules that moved into the layer packages in 0.2.

``moduseg_core.types`` is now ``moduseg_core.contract.types``, ``moduseg_core.runner`` is
``moduseg_core.pipeline.runner``, ``moduseg_core.io`` is ``moduseg_core.files.io`` and so on (``MOVED``). For one
release the old path imports the very same module object (so a monkeypatch or ``isinstance`` through either path sees
one module) and warns once with a ``DeprecationWarning`` that names the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

_LAYERS = {
    "contract": ("components", "config", "errors", "hookspecs", "kinds", "options", "plugins", "protocols", "types"),
    "files": ("failures", "faults", "io", "legend", "outputs", "progress", "proposal_files", "report_text", "writing"),
    "pipeline": ("bank", "bank_build", "inference", "label_eval", "predict_files", "runner", "segmenter", "streaming"),
}
MOVED = {f"moduseg_core.{m}": f"moduseg_core.{layer}.{m}" for layer, names in _LAYERS.items() for m in names}


def new_name(old: str) -> str | None:
    """The module's path in 0.2, for an old path (a moved module or one inside a moved package); else None."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        target = new_name(spec.name)
        assert target is not None
        warnings.warn(
            f"{spec.name} moved to {target}; import it from there (the old path goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(target)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system set the alias's spec on the real module: give it back its own
        alias = module.__spec__
        if alias is not None and alias.loader_state is not None:
            module.__spec__ = alias.loader_state


def install() -> None:
    """Let the old paths import (once per process)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())


def old_attribute(name: str) -> ModuleType:
    """``moduseg_core.<old module>`` as an attribute (``import moduseg_core as ms; ms.plugins``)."""
    if f"moduseg_core.{name}" not in MOVED:
        raise AttributeError(f"module 'moduseg_core' has no attribute {name!r}")
    return importlib.import_module(f"moduseg_core.{name}")
