"""Plugin discovery and the component registry.

Plugins are modules named by entry points in the ``moduseg`` group; the built-ins
ship the same way. Registration is cheap: it records a factory and an options
model. Nothing heavy is imported until ``get_component`` calls the factory.

``MODUSEG_LOAD_PLUGINS=a,b`` loads only the named entry points (an empty value
loads none), which is how tests and debugging sessions keep the registry small;
``MODUSEG_BLOCK_PLUGINS=a,b`` loads all but the named ones (e.g. to silence a broken
third-party plugin, or one whose names clash with another's). ``reset()`` forgets the
plugin manager and the registry, so the next call reads the environment again.

Hooks are called through pluggy, one plugin at a time, so each registration knows
which plugin made it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from moduseg_core.contract import hookspecs
from moduseg_core.contract.errors import ModusegError, did_you_mean
from moduseg_core.contract.kinds import HOOKS, KINDS, PROTOCOLS
from moduseg_core.contract.options import NoOptions, Options, parse_options

ENTRY_POINT_GROUP = "moduseg"


def module_found(module: str) -> bool:
    """Whether ``module`` is importable here (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ComponentSpec:
    """What a plugin registered: enough to list, document and build a component."""

    kind: str
    name: str
    factory: Callable[[Any], Any] = field(repr=False)
    options: type[Options] = NoOptions
    summary: str = ""
    extra: str | None = None
    requires: tuple[str, ...] = ()
    weights: str | None = None
    oracle: bool = False
    plugin: str = "?"
    entry_point: str = "?"
    #: How to install what ``requires`` names, when a pip extra cannot (e.g. packages not on PyPI).
    install: str | None = None

    @property
    def module(self) -> str:
        return getattr(self.factory, "__module__", "?")

    def missing_requirements(self) -> list[str]:
        """Top-level modules this component needs that are not importable here (nothing is imported)."""
        return [module for module in self.requires if not module_found(module)]

    @property
    def importable(self) -> bool:
        return not self.missing_requirements()

    def install_hint(self) -> str:
        if self.install:
            return self.install
        if self.extra:
            return f"pip install 'moduseg[{self.extra}]'"
        return "pip install " + " ".join(self.requires)


_manager: pluggy.PluginManager | None = None
_registry: dict[str, dict[str, ComponentSpec]] | None = None
_entry_point_dists: dict[str, str] = {}


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry-point plugins loaded on first use."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager("moduseg")
        pm.add_hookspecs(hookspecs)
        _load_entry_points(pm)
        pm.check_pending()
        _manager = pm
    return _manager


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    return None if value is None else {n.strip() for n in value.split(",") if n.strip()}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = _names("MODUSEG_LOAD_PLUGINS")
    for name in sorted(_names("MODUSEG_BLOCK_PLUGINS") or ()):
        pm.set_blocked(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must name itself
            raise ModusegError(
                f"Error importing plugin {ep.name!r} ({ep.value}): {exc}; "
                f"MODUSEG_BLOCK_PLUGINS={ep.name} skips it"
            ) from exc
        pm.register(module, name=ep.name)
        dist = getattr(ep, "dist", None)
        _entry_point_dists[ep.name] = f"{dist.name} {dist.version}" if dist else ep.name


def reset() -> None:
    """Forget the plugin manager and the registry: the next use loads the entry points again,
    reading ``MODUSEG_LOAD_PLUGINS`` / ``MODUSEG_BLOCK_PLUGINS`` anew (tests, notebooks)."""
    global _manager, _registry
    _manager = None
    _registry = None
    _entry_point_dists.clear()


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object by hand (tests, notebooks). Clears the registry cache."""
    plugin_manager().register(plugin, name=name)
    _reset_registry()


def unregister_plugin(name: str) -> None:
    pm = plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    _reset_registry()


def _reset_registry() -> None:
    global _registry
    _registry = None


def _collector(found: dict[str, dict[str, ComponentSpec]], kind: str, entry: str) -> Callable[..., None]:
    """The ``register`` callable handed to one plugin's hook for one kind."""
    origin = _entry_point_dists.get(entry, entry)

    def register(
        name: str,
        factory: Callable[[Any], Any],
        *,
        options: type[Options] = NoOptions,
        summary: str = "",
        extra: str | None = None,
        requires: tuple[str, ...] | list[str] = (),
        weights: str | None = None,
        oracle: bool = False,
        install: str | None = None,
    ) -> None:
        if not (isinstance(options, type) and issubclass(options, Options)):
            raise ModusegError(
                f"plugin {origin!r} registered {kind} {name!r} with options {options!r}; "
                "options must subclass moduseg_core.Options"
            )
        existing = found[kind].get(name)
        if existing is not None:
            raise ModusegError(
                f"{kind} name {name!r} is registered twice: by {existing.plugin!r} and by {origin!r}; "
                "uninstall one of them or block one with MODUSEG_BLOCK_PLUGINS"
            )
        found[kind][name] = ComponentSpec(
            kind=kind,
            name=name,
            factory=factory,
            options=options,
            summary=summary,
            extra=extra,
            requires=tuple(requires),
            weights=weights,
            oracle=oracle,
            install=install,
            plugin=origin,
            entry_point=entry,
        )

    return register


def registry() -> dict[str, dict[str, ComponentSpec]]:
    """kind → name → spec, collected from every plugin's hooks.

    Each hook is called through pluggy once per plugin that implements it (a subset hook
    caller holding that plugin alone), in registration order, so a registration is
    attributed to its plugin and a clash names both."""
    global _registry
    if _registry is not None:
        return _registry
    pm = plugin_manager()
    found: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
    plugins = pm.get_plugins()
    for kind in KINDS:
        hook_name = HOOKS[kind]
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            others = [p for p in plugins if p is not impl.plugin]
            call = pm.subset_hook_caller(hook_name, remove_plugins=others)
            call(register=_collector(found, kind, impl.plugin_name))
    _registry = found
    return found


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ModusegError(
            f"unknown component kind {kind!r}{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})"
        )
    return kind


def get_spec(kind: str, name: str) -> ComponentSpec:
    specs = registry()[check_kind(kind)]
    if name not in specs:
        available = ", ".join(sorted(specs)) or "none installed"
        raise ModusegError(
            f"unknown {kind} {name!r}{did_you_mean(name, specs)} (available {kind}s: {available}); "
            "`moduseg plugins list` shows what is installed"
        )
    return specs[name]


def list_components(kind: str | None = None) -> list[ComponentSpec]:
    """Every registered component, or those of one kind, in data-path then name order."""
    kinds = KINDS if kind is None else (check_kind(kind),)
    table = registry()
    return [table[k][n] for k in kinds for n in sorted(table[k])]


def build_options(kind: str, name: str, options: dict[str, Any] | Options | None = None) -> Options:
    spec = get_spec(kind, name)
    if isinstance(options, Options):
        return options
    return parse_options(kind, name, spec.options, dict(options or {}))


def get_component(kind: str, name: str, **options: Any) -> Any:
    """Build a component by kind and name: ``get_component("proposer", "slic", n_segments=80)``."""
    spec = get_spec(kind, name)
    parsed = build_options(kind, name, options)
    missing = spec.missing_requirements()
    if missing:
        raise ModusegError(
            f"{kind} {name!r} needs {', '.join(missing)}, which is not installed; "
            f"install it with: {spec.install_hint()}"
        )
    component = spec.factory(parsed)
    protocol = _protocols()[kind]
    if not isinstance(component, protocol):
        raise ModusegError(
            f"{kind} {name!r} from plugin {spec.plugin!r} built a {type(component).__name__}, "
            f"which does not implement {protocol.__name__}"
        )
    _remember(component, spec)
    return component


#: id of a component built by ``get_component`` → (a weak reference to it, its spec): which plugin's code a
#: failing frame belongs to (``failed_component``). Weak, so a dropped model is freed as before.
_built: dict[int, tuple[weakref.ref, ComponentSpec]] = {}
_built_lock = threading.Lock()


def _remember(component: Any, spec: ComponentSpec) -> None:
    key = id(component)
    try:
        ref = weakref.ref(component, lambda _ref: _built.pop(key, None))
    except TypeError:  # an object without weak-reference support (__slots__ without __weakref__)
        return
    with _built_lock:
        _built[key] = (ref, spec)


def _spec_of(obj: Any) -> ComponentSpec | None:
    entry = _built.get(id(obj))
    return entry[1] if entry is not None and entry[0]() is obj else None


def failed_component(exc: BaseException) -> str | None:
    """One line naming the component whose method raised ``exc`` (or what ``exc`` was raised from):
    ``index 'shelf' (plugin moduseg-shelf 0.1.0) failed in save(): FileNotFoundError: ...``.

    The traceback is walked from the outermost frame: the first frame that runs a method of a component
    built by ``get_component`` names it (its public method, not a helper it called). None when no
    component's code is on the traceback (a failure of moduseg itself keeps its traceback)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            owner = frame.f_locals.get("self")
            spec = _spec_of(owner) if owner is not None else None
            if spec is not None:
                detail = " ".join(str(exc).split()) or "(no message)"
                return (
                    f"{spec.kind} {spec.name!r} (plugin {spec.plugin}) failed in {frame.f_code.co_name}(): "
                    f"{type(exc).__name__}: {detail}"
                )
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return None


def _protocols() -> dict[str, type]:
    from moduseg_core.contract import protocols

    return {kind: getattr(protocols, name) for kind, name in PROTOCOLS.items()}


def loaded_plugins() -> dict[str, str]:
    """Entry-point name → 'distribution version' for the plugins loaded from entry points."""
    plugin_manager()
    return dict(_entry_point_dists)


def heavy_modules_loaded() -> list[str]:
    """Which heavy libraries are imported in this process (used by the import-cost test)."""
    heavy = (
        "torch", "transformers", "faiss", "sam2", "segment_anything", "skimage", "open_clip", "cv2", "matplotlib",
        "hnswlib", "timm", "einops", "detectron2", "hydra", "huggingface_hub",
    )
    return [m for m in heavy if m in sys.modules]
