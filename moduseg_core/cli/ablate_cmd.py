"""`moduseg ablate` (sweeps through the stage cache) and `moduseg cache list | size | prune`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ModusegError
from .common import ConfigOpt, OnErrorOpt, OverwriteOpt, SetOpt, exit_code

GridOpt = Annotated[
    Optional[list[str]],
    typer.Option("--grid", "-g", help="Axis KEY=V1,V2,... of the cartesian product (values are YAML: encoder.layers=[8],[10]); repeatable."),
]
ZipOpt = Annotated[
    Optional[list[str]],
    typer.Option("--zip", help="Axis KEY=V1,V2,... advancing together with the other --zip axes (equal lengths); repeatable."),
]
CacheDirOpt = Annotated[
    Optional[Path], typer.Option("--cache-dir", help="Stage cache folder (default: $MODUSEG_CACHE/stages, ~/.cache/moduseg/stages).")
]


def _cache(cache_dir: Optional[Path]):
    from ..cache import StageCache

    return StageCache(cache_dir)


def ablate(
    sweep_file: Annotated[Optional[Path], typer.Argument(metavar="[SWEEP.yaml]", help="Sweep file: base, grid, zip, limits (docs/ablations.md).")] = None,
    config: ConfigOpt = None,
    grid: GridOpt = None,
    zip_axes: ZipOpt = None,
    sets: SetOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Sweep name (default: the file's name or 'sweep').")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: runs/ablate/NAME).")] = None,
    cache_dir: CacheDirOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every point as a plain `moduseg run` (nothing cached or reused).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate every point and list them; run nothing.")] = False,
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
) -> int:
    """Run a sweep of full runs (bank + predict + evaluate) through the stage cache.

    Points are the grid's cartesian product times the zipped axes; results go to
    results.csv / .json / .md and plots/*.png in --out."""
    from ..ablate import expand, load_sweep, parse_axis, run_sweep, sweep_from_dict
    from ..config import apply_overrides, load_config
    from ..outputs import prepare

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
        extra = [f"on_error={on_error.value}"] if on_error is not None else []
        sweep.base = apply_overrides(sweep.base, sets=[*(sets or []), *extra])
    for text in grid or []:
        key, values = parse_axis(text, "--grid")
        sweep.zip.pop(key, None)
        sweep.grid[key] = values
    cli_zip = [parse_axis(text, "--zip") for text in zip_axes or []]
    if cli_zip:
        for key, values in cli_zip:
            sweep.grid.pop(key, None)
            sweep.zip[key] = values
    if name:
        sweep.name = name
    points = expand(sweep)
    out = out or Path("runs") / "ablate" / sweep.name
    output = None if dry_run else prepare(out, "ablate", overwrite=overwrite)
    typer.echo(f"sweep {sweep.name!r}: {len(points)} point(s) over {', '.join(sweep.axes) or 'no axes'}", err=True)
    if dry_run:
        for point in points:
            typer.echo(f"  {point.index:3d}  {point.label}")
        return 0
    cache = None if no_cache else _cache(cache_dir)

    def show(report: dict) -> None:
        bound = report.get("boundary") or {}
        from ..ablate.results import _computed_text

        computed = "all cached" if report.get("scores_cached") else f"computed: {_computed_text(report)}"
        typer.echo(
            f"[{report['point'] + 1}/{len(points)}] {report['label']}: mIoU {100 * report['miou']:.2f}, "
            f"boundary F {100 * bound.get('f_score', float('nan')):.2f}, Boundary IoU {100 * bound.get('iou', float('nan')):.2f} "
            f"({report['seconds']['wall']:.1f} s; {computed})"
        )

    reports, summary = run_sweep(sweep, out, cache=cache, on_point=show, output=output)
    if any(r.get("oracle") for r in reports):
        typer.secho("NOTE: labeler 'gt' is the ORACLE (ground-truth masks); these mIoUs are upper bounds.", fg="yellow", err=True)
    enc = summary["encoder"]
    line = f"{len(reports)} points in {summary['wall']:.1f} s"
    if cache is not None and enc.get("uncached_passes"):
        line += (f"; encoder ran on {enc['passes']} images (one-by-one uncached runs: {enc['uncached_passes']}, "
                 f"{100 * enc['saved_fraction']:.1f} % saved)")
    typer.echo(line)
    typer.echo(f"results: {out / 'results.md'} (csv, json, plots/)")
    return exit_code(sum(r.get("skipped", 0) for r in reports))


cache_app = typer.Typer(help="The stage cache of `moduseg ablate`: list, size, prune.", no_args_is_help=True)


def _age(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} d" if days >= 1 else f"{seconds / 3600:.1f} h"


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@cache_app.command("list")
def cache_list(
    stage: Annotated[Optional[str], typer.Option("--stage", help="List this stage's entries one by one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Stages with their entry counts, sizes and ages; with --stage, every entry."""
    from ..cache import check_stage

    cache = _cache(cache_dir)
    now = time.time()
    if stage is not None:
        check_stage(stage)
        entries = list(cache.entries(stage))
        if as_json:
            typer.echo(json.dumps([{"key": e.key, "bytes": e.bytes, "mtime": e.mtime, "partial": e.partial, "path": str(e.path)} for e in entries], indent=1))
            return
        for e in entries:
            typer.echo(f"{e.key[:16]}  {_bytes(e.bytes):>10}  used {_age(now - e.mtime)} ago{'  (partial)' if e.partial else ''}")
        typer.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {cache.root / stage}")
        return
    summary = cache.summary()
    if as_json:
        typer.echo(json.dumps({"root": str(cache.root), "stages": summary}, indent=1))
        return
    typer.echo(f"stage cache: {cache.root}")
    if not summary:
        typer.echo("  (empty)")
    for name, row in summary.items():
        partial = f", {row['partial']} partial" if row["partial"] else ""
        typer.echo(f"  {name:<12} {row['entries']:>7} entries  {_bytes(row['bytes']):>10}  "
                   f"newest {_age(now - row['newest'])}, oldest {_age(now - row['oldest'])} ago{partial}")


@cache_app.command("size")
def cache_size(
    stage: Annotated[Optional[str], typer.Option("--stage", help="Only this stage.")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Total size of the stage cache (or of one stage)."""
    from ..cache import check_stage

    cache = _cache(cache_dir)
    if stage is not None:
        check_stage(stage)
    summary = cache.summary()
    total = sum(row["bytes"] for name, row in summary.items() if stage in (None, name))
    count = sum(row["entries"] for name, row in summary.items() if stage in (None, name))
    typer.echo(f"{_bytes(total)} in {count} entries ({total} bytes) under {cache.root if stage is None else cache.root / stage}")


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[Optional[float], typer.Option("--older-than", help="Delete entries not used for this many days.")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Only this stage.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Delete every entry (of --stage, or of all stages).")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Delete cache entries by age (--older-than DAYS) or all of them (--all)."""
    from ..cache import check_stage

    if older_than is None and not everything:
        raise ModusegError("cache prune needs --older-than DAYS or --all; e.g. moduseg cache prune --older-than 30")
    if older_than is not None and everything:
        raise ModusegError("cache prune takes --older-than DAYS or --all, not both")
    if older_than is not None and older_than < 0:
        raise ModusegError(f"--older-than {older_than} is negative; give a number of days ≥ 0")
    if stage is not None:
        check_stage(stage)
    cache = _cache(cache_dir)
    removed, freed = cache.prune(older_than_days=older_than, stage=stage)
    typer.echo(f"removed {removed} entr{'y' if removed == 1 else 'ies'} ({_bytes(freed)}) from {cache.root}")
