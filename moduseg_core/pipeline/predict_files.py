"""Segmenting image files with a saved bank (``moduseg predict``): class maps, overlays and a report."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import Sample


def samples_of(paths: Sequence[Path]) -> list[Sample]:
    """One unlabelled sample per image file, named by its stem; two files with one stem are refused
    (their masks would overwrite each other)."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen and seen[path.stem] != path:
            raise ModusegError(
                f"input images {seen[path.stem]} and {path} share the name {path.stem!r}, so their masks would "
                "overwrite each other in OUT/predictions; predict them into separate folders"
            )
        seen[path.stem] = path
    return [Sample(id=p.stem, image_path=p) for p in paths]


def predict_files(
    config: RunConfig,
    inputs: Sequence[Path],
    bank_dir: Path,
    out: Path,
    *,
    output: Any,
    overlays: bool = True,
    named: Collection[str] = (),
    explain: bool = False,
) -> dict[str, Any]:
    """Segment the images in ``inputs`` (files or folders) with the bank in ``bank_dir`` into ``out``:
    ``predictions/{id}.png``, ``overlays/{id}.jpg``, ``report.json`` (returned), ``errors.jsonl``.

    The encoder and aggregator are the bank's own and the index is the bank's saved one, unless
    ``named`` (the kinds the user set options for) names them; a mismatch with the bank is refused
    when the bank is loaded. ``output`` is the ``outputs.OutputDir`` of ``out``."""
    from moduseg_core.files.failures import ERRORS_FILE, ErrorLog
    from moduseg_core.files.writing import write_json
    from moduseg_core.pipeline.bank import Bank
    from moduseg_core.pipeline.runner import image_paths, make_predictor, predict_samples

    samples = samples_of(image_paths(inputs))
    loaded = Bank.load(bank_dir, index=config.index if "index" in named else None)
    data = config.model_dump()
    for kind in ("encoder", "aggregator"):
        if kind not in named:
            data[kind] = {"name": loaded.manifest["components"][kind]["name"],
                          "options": loaded.manifest["components"][kind]["options"]}
    config = type(config).model_validate(data)
    if explain and config.executor != "local":
        raise ModusegError(f"--explain needs --executor local (the evidence is gathered in this process), not "
                           f"{config.executor!r}; leave out --executor {config.executor} or --explain")
    if config.executor == "ray":  # the workers build the predictor; here only the checks and the cluster
        from moduseg_core.executors import make_executor

        loaded.check_encoder(config.encoder, config.aggregator)
        make_executor(config)
        predictor = None
    else:
        predictor = make_predictor(config, loaded)
    log = None
    if explain and predictor is not None:
        from moduseg_core.pipeline.evidence import ExplainLog

        predictor.explain, log = True, ExplainLog(loaded, loaded.class_names)
        if loaded.traced() is None:
            from moduseg_core.files.progress import note
            from moduseg_core.pipeline.provenance import NO_PROVENANCE

            note(f"bank {bank_dir}: {NO_PROVENANCE} (explain.jsonl names the neighbours' rows and classes only)")
    for path in [bank_dir, *inputs]:
        output.protect(path)  # inputs inside the output folder are never removed as stale
    errors = ErrorLog(config.on_error)
    planned = ["report.json", ERRORS_FILE, *(f"predictions/{s.id}.png" for s in samples)]
    planned += ["explain.jsonl"] if explain else []
    planned += ["chunks/"] if predictor is None else []  # Ray: the finished chunks' records (a rerun resumes)
    planned += [f"overlays/{s.id}.jpg" for s in samples] if overlays else []
    with output:
        output.begin(planned)
        errors.open(out)
        if predictor is None:
            from moduseg_core.executors.keys import CHUNKS, prediction_key
            from moduseg_core.executors.ray_predict import predict_on_ray

            key = prediction_key(config, Path(bank_dir), samples) | {
                "overlays": overlays,
                "index_set": "index" in named,
            }
            _, masks = predict_on_ray(config, Path(bank_dir), samples, out, n_classes=len(loaded.class_names),
                                      overlays=overlays, errors=errors, class_names=loaded.class_names,
                                      index=config.index if "index" in named else None, state=out / CHUNKS, key=key)
        else:
            predict_samples(
                predictor,
                samples,
                out,
                n_classes=len(loaded.class_names),
                overlays=overlays,
                errors=errors,
                class_names=loaded.class_names,
                explain=log,
            )
            masks = {"proposed": predictor.masks_seen, "kept": predictor.masks_kept}
            if log is not None:
                log.write(out)
        errors.check_some_succeeded(len(samples))
        skipped = {"images": len(errors)} | ({"log": ERRORS_FILE} if len(errors) else {})
        report = {
            "images": len(samples), "predicted": len(samples) - len(errors), "skipped": skipped,
            "bank": str(bank_dir), "masks": masks,
        }
        write_json(out / "report.json", report)
        output.finish()
    return report
