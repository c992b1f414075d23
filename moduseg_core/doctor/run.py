"""Check a config's components before a job: one line per component, nothing heavy built.

Per component: the name is registered, the options parse, the modules of ``requires`` are
importable, a device named in the options (``cuda``, ``mps``) is there, and whatever the
component's options say it needs (their optional ``doctor_checks()`` method: docs/plugins.md).
The dataset is opened for the bank and eval splits (listing files only). ``moduseg doctor``
prints the lines; ``run``, ``build-bank`` and ``ablate`` call ``preflight`` first and stop on
the first problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moduseg_core.contract.config import Choice, RunConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.kinds import KINDS
from moduseg_core.doctor.checks import Check, device_check, fail, ok


@dataclass(frozen=True)
class Line:
    """The verdict on one component (or the output folder)."""

    kind: str
    name: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def text(self) -> str:
        shown = [c for c in self.checks if c.ok == self.ok and c.message]
        return "; ".join(c.text() for c in shown) or ("ok" if self.ok else "failed")

    def render(self, width: int = 10) -> str:
        return f"{'ok' if self.ok else 'FAIL':<5} {self.kind:<{width}} {self.name}: {self.text()}"


def _plugin_checks(options: Any, label: str) -> list[Check]:
    method = getattr(options, "doctor_checks", None)
    if not callable(method):
        return []
    try:
        return list(method())
    except ModusegError as exc:
        return [fail(str(exc), "fix the option it names")]
    except Exception as exc:  # noqa: BLE001 - a plugin's checks must not take the doctor down
        return [fail(f"{label}'s checks raised {type(exc).__name__}: {exc}", "report it to the plugin's authors")]


def component_checks(kind: str, choice: Choice, *, label: str | None = None, devices: bool = True) -> list[Check]:
    """Everything checkable about one component without building it (``devices=False``: not its device,
    for jobs whose workers run elsewhere)."""
    from moduseg_core.contract.plugins import build_options, get_spec

    label = label or kind
    try:
        spec = get_spec(kind, choice.name)
        options = build_options(kind, choice.name, choice.options)
    except ModusegError as exc:
        return [fail(str(exc), f"change --{kind} or --set {label}.OPTION")]
    checks: list[Check] = []
    missing = spec.missing_requirements()
    if missing:
        checks.append(fail(f"{', '.join(missing)} not installed", spec.install_hint()))
        return checks  # its own checks would only repeat that
    if spec.requires:
        checks.append(ok("imports " + ", ".join(spec.requires)))
    device = getattr(options, "device", None)
    if devices and isinstance(device, str):
        found = device_check(device, label)
        if found is not None:
            checks.append(found)
    checks.extend(_plugin_checks(options, label))
    return checks or [ok("nothing to check")]


def dataset_checks(config: RunConfig, splits: Iterable[str]) -> list[Check]:
    """Open the dataset for each split (lists files; reads no image)."""
    from moduseg_core.contract.components import build

    checks = []
    for split in dict.fromkeys(splits):
        choice = Choice(name=config.dataset.name, options={**config.dataset.options, "split": split})
        try:
            built = build("dataset", choice)
            count = len(built.component)
        except ModusegError as exc:
            problem = fail(str(exc), "")
            if problem not in checks:  # a missing root is one problem, whatever the split
                checks.append(problem)
            continue
        except Exception as exc:  # noqa: BLE001 - reported as the dataset's line
            checks.append(fail(f"split {split!r} cannot be opened ({type(exc).__name__}: {exc})", "check dataset.root"))
            continue
        if count == 0:
            checks.append(fail(f"split {split!r} has no images", "check dataset.root and the split list"))
        else:
            checks.append(ok(f"{split} {count} images"))
    return checks


def output_checks(out: Path, command: str, overwrite: bool = False) -> list[Check]:
    """``--out`` would be accepted (new, empty or this command's own) and can be written."""
    from moduseg_core.files.outputs import OutputDir

    try:
        OutputDir(out, command, overwrite=overwrite).check()
    except ModusegError as exc:
        return [fail(str(exc), "choose another --out or pass --overwrite")]
    existing = Path(out).expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        return [fail(f"{existing} is not writable", "choose an --out you can write to")]
    state = "exists, reusable" if Path(out).exists() else f"new, under {existing}"
    return [ok(f"{out} ({state})")]


def diagnose(
    config: RunConfig,
    kinds: Iterable[str] = KINDS,
    *,
    splits: Iterable[str] | None = None,
    out: Path | None = None,
    command: str = "run",
) -> list[Line]:
    """One ``Line`` per chosen component of ``kinds`` (and the output folder when ``out`` is given)."""
    lines = []
    for kind in kinds:
        choice = config.choice(kind)
        checks = component_checks(kind, choice, devices=config.executor == "local")
        if kind == "dataset" and all(c.ok for c in checks):
            wanted = splits if splits is not None else (config.bank_split, config.eval_split)
            checks = dataset_checks(config, wanted)
        lines.append(Line(kind, choice.name, tuple(checks)))
    if out is not None:
        lines.append(Line("output", str(out), tuple(output_checks(out, command))))
    return lines


def preflight(
    config: RunConfig | Iterable[RunConfig], kinds: Iterable[str], *, splits: Iterable[str] | None = None
) -> None:
    """Stop with one line on the first problem ``diagnose`` finds; silent when all is well. Several configs
    (an ablation's points) are checked component by component, each distinct choice once.

    ``MODUSEG_NO_DOCTOR=1`` skips it (e.g. on a cluster whose workers, not this machine, run the models)."""
    if os.environ.get("MODUSEG_NO_DOCTOR", "") not in ("", "0"):
        return
    from moduseg_core.contract.plugins import build_options

    configs = [config] if isinstance(config, RunConfig) else list(config)
    kinds = tuple(kinds)
    for cfg in configs:  # names and options first, with their own messages (what a job reports first)
        for kind in sorted(kinds, key=lambda k: k == "dataset"):  # the components, then the dataset
            choice = cfg.choice(kind)
            options = {**choice.options, "split": cfg.bank_split} if kind == "dataset" else choice.options
            build_options(kind, choice.name, options)
    seen: set[str] = set()
    for cfg in configs:
        todo = []
        for kind in kinds:
            key = json.dumps([kind, cfg.choice(kind).model_dump(mode="json")], sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                todo.append(kind)
        for line in diagnose(cfg, todo, splits=splits):
            _stop_on(line)


def _stop_on(line: Line) -> None:
    if not line.ok and line.kind == "dataset":  # the dataset's own one-line error, as the job gives it
        raise ModusegError(next(c.text() for c in line.checks if not c.ok))
    if not line.ok:
        raise ModusegError(
            f"{line.kind} {line.name!r} cannot run here: {line.text()} (`moduseg doctor` lists every check; "
            "MODUSEG_NO_DOCTOR=1 skips them)"
        )
