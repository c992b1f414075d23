"""Sweep files: a base run config plus axes, expanded into validated points.

A sweep is YAML::

    name: coco-mini-components        # names the output folder
    base: {...}                       # a RunConfig mapping (as for `moduseg run --config`), or the
                                      # path of such a file, relative to the sweep file
    grid:                             # cartesian product of these axes
      proposer: [slic, felzenszwalb]  # a bare kind picks the component (like --proposer), by name or
                                      # as {name: NAME, options: {...}}
      method.top_k: [1, 5, 25]        # a dotted key sets a value (like --set)
    zip:                              # these axes advance together (equal lengths): one more axis
      encoder.layers: [[8], [10]]
      encoder.resize: [448, 644]
    limits: {bank_limit: 40, eval_limit: 10}   # optional, applied to the base

Axis keys are exactly the ``--set`` keys (``moduseg_core.contract.config.apply_overrides``). Every
point's config is built and every component's options validated before anything runs.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moduseg_core.contract.components import identity, validate
from moduseg_core.contract.config import RunConfig, apply_overrides, config_from_dict, load_config
from moduseg_core.contract.errors import ModusegError, did_you_mean
from moduseg_core.contract.kinds import KINDS, RUN_KINDS

SWEEP_KEYS = ("name", "description", "base", "grid", "zip", "limits")
LIMIT_KEYS = ("bank_limit", "eval_limit")


@dataclass
class Sweep:
    name: str
    base: RunConfig
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zip: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""
    source: str = "sweep"

    @property
    def axes(self) -> list[str]:
        """Axis keys in the order they vary in the point list (grid keys, then zip keys)."""
        return [*self.grid, *self.zip]

    def varying_axes(self) -> list[str]:
        """Axes with more than one value (those a table or plot spreads over)."""
        out = [k for k, v in self.grid.items() if len(v) > 1]
        n_zip = len(next(iter(self.zip.values()))) if self.zip else 0
        return out + (list(self.zip) if n_zip > 1 else [])


@dataclass(frozen=True)
class Point:
    index: int
    values: dict[str, Any]  # axis key → value
    config: RunConfig

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.values.items()) or "base"

    @property
    def slug(self) -> str:
        text = "-".join(format_value(v) for v in self.values.values()) or "base"
        text = re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")[:80]
        return f"{self.index:03d}-{text}"


def format_value(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:  # a whole component choice
        return str(value["name"])
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_axis(text: str, option: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` from the command line. Values are YAML: ``encoder.layers=[8],[10]``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ModusegError(
            f"{option} {text!r} is not KEY=VALUE,VALUE...; write e.g. {option} proposer=slic,felzenszwalb "
            f"or {option} encoder.layers=[8],[10]"
        )
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError as exc:
        raise ModusegError(
            f"{option} {text!r}: the values are not a comma-separated YAML list; quote or bracket them, "
            f"e.g. {option} encoder.layers=[8],[10]"
        ) from exc
    return key, values


def _check_axes(axes: Any, section: str, source: str) -> dict[str, list[Any]]:
    if axes is None:
        return {}
    if not isinstance(axes, dict):
        raise ModusegError(f"{source}: {section} must map keys to lists of values, got {type(axes).__name__}")
    out = {}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ModusegError(
                f"{source}: {section} axis {key!r} must be a non-empty list of values, got {values!r}; "
                f"write e.g. {key}: [a, b]"
            )
        out[str(key)] = values
    return out


def sweep_from_dict(data: dict[str, Any], *, source: str = "sweep", here: Path | None = None) -> Sweep:
    if not isinstance(data, dict):
        raise ModusegError(f"{source} must hold a mapping (name, base, grid, zip, limits), got {type(data).__name__}")
    for key in data:
        if key not in SWEEP_KEYS:
            raise ModusegError(
                f"{source}: unknown sweep key {key!r}{did_you_mean(str(key), SWEEP_KEYS)} (allowed: "
                f"{', '.join(SWEEP_KEYS)})"
            )
    base_data = data.get("base") or {}
    if isinstance(base_data, str):
        base_path = Path(base_data).expanduser()
        if not base_path.is_absolute() and here is not None:
            base_path = here / base_path
        base = load_config(base_path)
    elif isinstance(base_data, dict):
        base = config_from_dict(base_data, source=f"{source} base")
    else:
        raise ModusegError(
            f"{source}: base must be a run-config mapping or the path of a run config, got {type(base_data).__name__}"
        )
    limits = data.get("limits") or {}
    if not isinstance(limits, dict) or any(k not in LIMIT_KEYS for k in limits):
        bad = next((k for k in limits if k not in LIMIT_KEYS), limits) if isinstance(limits, dict) else limits
        raise ModusegError(f"{source}: limits takes {', '.join(LIMIT_KEYS)}, got {bad!r}")
    if limits:
        base = apply_overrides(base, sets=[f"{k}={_yaml_text(v)}" for k, v in limits.items()])
    name = str(data.get("name") or (Path(source).stem if source.endswith((".yaml", ".yml")) else "sweep"))
    return Sweep(
        name=name,
        base=base,
        grid=_check_axes(data.get("grid"), "grid", source),
        zip=_check_axes(data.get("zip"), "zip", source),
        description=str(data.get("description") or ""),
        source=source,
    )


def load_sweep(path: Path) -> Sweep:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ModusegError(
            f"sweep file {path} does not exist; pass an existing YAML file (see docs/ablations.md)"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ModusegError(f"sweep file {path} is not valid YAML{where}; fix the syntax") from exc
    return sweep_from_dict(data or {}, source=str(path), here=path.parent)


def _yaml_text(value: Any) -> str:
    """A value as YAML text that ``config.parse_value`` reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    elif text.endswith("..."):
        text = text[:-3].strip()
    return text


def assign(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """Apply axis values exactly as ``--<kind> NAME`` / ``--set KEY=VALUE`` would."""
    choices: dict[str, str | None] = {}
    sets = []
    for key, value in values.items():
        if key in KINDS:
            if isinstance(value, dict) and isinstance(value.get("name"), str) and set(value) <= {"name", "options"}:
                # a whole choice: {name: entityseg, options: {weights: ...}}
                choices[key] = value["name"]
                sets += [f"{key}.{option}={_yaml_text(v)}" for option, v in (value.get("options") or {}).items()]
                continue
            if not isinstance(value, str):
                raise ModusegError(
                    f"axis {key!r} picks a {key}: give names or {{name: NAME, options: {{...}}}} mappings "
                    f"(e.g. {key}: [a, b]), got {value!r}; set one option with the axis {key}.OPTION"
                )
            choices[key] = value
        else:
            sets.append(f"{key}={_yaml_text(value)}")
    return apply_overrides(config, choices=choices, sets=sets)


def expand(sweep: Sweep) -> list[Point]:
    """Every point's config (grid product × zipped tuples), all validated before any work starts."""
    overlap = set(sweep.grid) & set(sweep.zip)
    if overlap:
        key = sorted(overlap)[0]
        raise ModusegError(f"{sweep.source}: axis {key!r} is in both grid and zip; keep it in one of them")
    lengths = {k: len(v) for k, v in sweep.zip.items()}
    if len(set(lengths.values())) > 1:
        text = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ModusegError(
            f"{sweep.source}: zip axes must have equal lengths ({text}); make them equal or move one to grid"
        )
    grid_keys = list(sweep.grid)
    zip_rows = list(zip(*sweep.zip.values(), strict=True)) if sweep.zip else [()]
    points: list[Point] = []
    for combo in itertools.product(*sweep.grid.values()):
        for row in zip_rows:
            values = dict(zip(grid_keys, combo, strict=True)) | dict(zip(sweep.zip, row, strict=True))
            index = len(points)
            where = (
                f"{sweep.source} point {index} "
                f"({', '.join(f'{k}={format_value(v)}' for k, v in values.items()) or 'base'})"
            )
            try:
                config = assign(sweep.base, values)
                validate(config, RUN_KINDS)
                identity("dataset", config.dataset)
            except ModusegError as exc:
                raise ModusegError(f"{where}: {exc}") from exc
            points.append(Point(index, values, config))
    return points


def compose_sweep(
    sweep_file: Path | None = None,
    config: Path | None = None,
    *,
    grid: list[str] | None = None,
    zip_axes: list[str] | None = None,
    sets: list[str] | None = None,
    on_error: str | None = None,
    name: str | None = None,
) -> Sweep:
    """The sweep ``moduseg ablate`` runs: a sweep file (or ``--config`` as the base, or an empty base),
    then ``--set`` / ``on_error`` on the base, then ``--grid`` and ``--zip`` axes (``KEY=V1,V2``), which
    replace a file's axis of the same key, then the name."""
    if sweep_file is not None and config is not None:
        raise ModusegError(
            f"give either a sweep file ({sweep_file}) or --config {config} as the base, not both; "
            "put the base into the sweep file's base: section"
        )
    if sweep_file is not None:
        sweep = load_sweep(sweep_file)
    else:
        sweep = sweep_from_dict({"base": {}}, source="command line")
        sweep.base = load_config(config)
    if sets or on_error is not None:
        extra = [f"on_error={on_error}"] if on_error is not None else []
        sweep.base = apply_overrides(sweep.base, sets=[*(sets or []), *extra])
    for text in grid or []:
        key, values = parse_axis(text, "--grid")
        sweep.zip.pop(key, None)
        sweep.grid[key] = values
    for key, values in [parse_axis(text, "--zip") for text in zip_axes or []]:
        sweep.grid.pop(key, None)
        sweep.zip[key] = values
    if name:
        sweep.name = name
    return sweep
