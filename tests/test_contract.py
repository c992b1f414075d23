"""The contract every registered component keeps, parametrised over the registry as collected:
a plugin is tested here the moment it registers.

For each component: ``moduseg plugins show`` documents it (every option, with its default), its
options model round-trips, and — built offline from local files (tests/contract_builders.py:
tiny random checkpoints of the real model classes, coco-mini laid out as it expects) — it keeps
its kind's protocol on a real coco-mini photo: shapes, dtypes and the value rules of
moduseg_core/protocols. A component that cannot be built here must refuse in one line naming
the fix; ``test_every_component_has_a_builder`` fails when a new one has neither."""

from __future__ import annotations

import os
import re
from pathlib import Path

import contract_builders as cb
import numpy as np
import pytest

import moduseg_core as ms
from moduseg_core.cli import main
from moduseg_core.contract import plugins as registry_module
from moduseg_core.contract import protocols
from moduseg_core.contract.kinds import KINDS, PROTOCOLS
from moduseg_core.contract.types import FeatureMap, Proposals, SearchResult
from moduseg_core.files.io import read_image, read_mask

PLUGIN_FILTERS = ("MODUSEG_LOAD_PLUGINS", "MODUSEG_BLOCK_PLUGINS")


def _registered() -> list[tuple[str, str]]:
    """(kind, name) of every component the installed plugins register, whatever filter the environment sets."""
    saved = {v: os.environ.pop(v) for v in PLUGIN_FILTERS if v in os.environ}
    registry_module.reset()
    try:
        return [(kind, spec.name) for kind in KINDS for spec in ms.list_components(kind)]
    finally:
        os.environ.update(saved)
        registry_module.reset()


#: read when this module is collected: a plugin is in the parametrisation as soon as it is installed
COMPONENTS = _registered()
IDS = [f"{kind}:{name}" for kind, name in COMPONENTS]


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """Every installed plugin (as collected), caches private and the hubs offline."""
    with pytest.MonkeyPatch.context() as mp:
        for variable in PLUGIN_FILTERS:
            mp.delenv(variable, raising=False)
        for variable in ("MODUSEG_CACHE", "HF_HOME", "TORCH_HOME"):
            mp.setenv(variable, str(tmp_path_factory.mktemp(variable.lower())))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.syspath_prepend(str(Path(__file__).parent))  # entityseg_standin, encoder_checkpoints
        registry_module.reset()
        yield
        registry_module.reset()


@pytest.fixture(scope="module")
def ctx(coco_mini, tmp_path_factory) -> cb.Context:
    return cb.Context(coco_mini, tmp_path_factory.mktemp("contract"))


# -- the parametrisation is the registry -----------------------------------------------------------------


def test_every_component_has_a_builder():
    registered = {(s.kind, s.name) for s in ms.list_components()}
    assert set(COMPONENTS) == registered  # nothing registered after collection was left out
    assert {k for k, _ in COMPONENTS} == set(KINDS)  # every kind has at least one component
    without = sorted(registered - set(cb.BUILDERS) - set(cb.REFUSALS))
    assert not without, f"add a builder (or a documented offline refusal) to tests/contract_builders.py for {without}"
    assert not set(cb.BUILDERS) & set(cb.REFUSALS)
    assert set(cb.REFUSAL_FALLBACKS) <= set(cb.REFUSALS)


# -- plugins show, options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, name", COMPONENTS, ids=IDS)
def test_plugins_show(kind, name, capsys):
    spec = registry_module.get_spec(kind, name)
    assert main(["plugins", "show", name, "--kind", kind]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{kind} {name}: {spec.summary}\n")
    assert f"plugin: {spec.plugin}" in out
    fields = spec.options.model_fields
    if not fields:
        assert "options: none" in out
    for key, info in fields.items():
        default = repr("(required)" if info.is_required() else info.get_default(call_default_factory=True))
        assert re.search(rf"^    {re.escape(key)} \(.*, default {re.escape(default)}\)", out, re.M), (key, out)


def _required_values(kind: str, name: str, ctx) -> dict:
    """Values for the options a component requires (only roots, in the built-ins)."""
    fields = registry_module.get_spec(kind, name).options.model_fields
    return {key: str(ctx.coco_mini) for key, info in fields.items() if info.is_required()}


@pytest.mark.parametrize("kind, name", COMPONENTS, ids=IDS)
def test_options_round_trip(kind, name, ctx):
    spec = registry_module.get_spec(kind, name)
    options = registry_module.build_options(kind, name, _required_values(kind, name, ctx))
    assert type(options) is spec.options
    dumped = options.model_dump()
    again = spec.options.model_validate(dumped)
    assert again == options and again.model_dump() == dumped
    from_json = spec.options.model_validate_json(options.model_dump_json())
    assert from_json == options
    identity = options.identity()
    assert identity == again.identity() == from_json.identity()
    output_fields = set(spec.options.model_fields) - set(spec.options.runtime_fields)
    if type(options).identity is ms.Options.identity:
        assert set(identity) == output_fields
    else:  # an override may leave out options whose values give the same output (sam/sam2's exact engines)
        assert set(identity) <= output_fields
    # an unknown key is refused in one line naming the component
    with pytest.raises(ms.ModusegError) as info:
        registry_module.build_options(kind, name, {**_required_values(kind, name, ctx), "no_such_option_here": 1})
    assert "no_such_option_here" in str(info.value) and "\n" not in str(info.value)


# -- the protocol on a real photo ----------------------------------------------------------------------------


def _build(kind: str, name: str, ctx):
    key = (kind, name)
    lacking = cb.missing(key)
    if lacking:
        message = f"{kind} {name!r} needs {', '.join(lacking)}: {registry_module.get_spec(kind, name).install_hint()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if key in cb.REFUSALS:
        module, text = cb.REFUSALS[key]
        if registry_module.get_spec(kind, name).missing_requirements() == [module]:
            with pytest.raises(ms.ModusegError) as info:
                ms.get_component(kind, name)
            assert re.search(text, str(info.value)) and "\n" not in str(info.value), str(info.value)
        return cb.REFUSAL_FALLBACKS[key](ctx)
    return cb.BUILDERS[key](ctx)


@pytest.mark.parametrize("kind, name", COMPONENTS, ids=IDS)
def test_protocol(kind, name, ctx):
    component = _build(kind, name, ctx)
    # get_component checks this itself; the components built around it (sam, entityseg) are checked here
    assert isinstance(component, getattr(protocols, PROTOCOLS[kind]))
    if kind == "labeler":
        assert component.oracle is registry_module.get_spec(kind, name).oracle  # what `plugins list` says
    CHECKS[kind](component, ctx)


def check_dataset(ds, ctx):
    samples = list(ds)
    assert len(ds) == len(samples) > 0
    assert ds.class_names[0] == "background" and len(set(ds.class_names)) == len(ds.class_names)
    for s in samples:
        assert s.image_path.is_file(), s.image_path
        assert s.mask_path is None or s.mask_path.is_file(), s.mask_path
        assert all(0 < c < len(ds.class_names) for c in s.labels), (s.id, s.labels)
        assert len(set(s.labels)) == len(s.labels)
    assert len({s.id for s in samples}) == len(samples)
    assert ds.split in ("val", "all")  # what the builders ask for (folder datasets have one split, all)
    # a sample's image-level labels are the classes of its mask, where it has one
    first = next((s for s in samples if s.mask_path is not None), None)
    if first is not None:
        mask = read_mask(first.mask_path)
        assert mask.shape == read_image(first.image_path).shape[:2]
        assert set(first.labels) == set(np.unique(mask).tolist()) - {0, 255}, first


def check_labeler(labeler, ctx):
    sample, image = ctx.sample, ctx.full_image
    assert len(sample.labels) >= 2
    out = labeler.label(image, sample)
    assert out.shape == image.shape[:2] and np.issubdtype(out.dtype, np.integer)
    found = set(np.unique(out).tolist())
    assert found <= {0, 255, *sample.labels}, (found, sample.labels)
    if labeler.oracle:  # reads the ground truth, whatever the labels say
        return
    # fewer image labels → no pixel of the dropped classes
    narrowed = type(sample)(sample.id, sample.image_path, sample.labels[:1], sample.mask_path)
    assert set(np.unique(labeler.label(image, narrowed)).tolist()) <= {0, 255, sample.labels[0]}


def check_proposer(proposer, ctx):
    image = ctx.image
    proposals = proposer.propose(image, image_id=ctx.sample.id)
    assert isinstance(proposals, Proposals)
    h, w = image.shape[:2]
    assert proposals.masks.dtype == np.bool_ and proposals.masks.ndim == 3 and proposals.masks.shape[1:] == (h, w)
    assert proposals.scores.dtype == np.float32 and proposals.scores.shape == (len(proposals.masks),)
    assert np.isfinite(proposals.scores).all()
    assert len(proposals) >= 1
    assert proposals.masks.reshape(len(proposals), -1).any(axis=1).all()  # no empty mask
    # the same image again: the same proposals (they are cached by image and reused)
    again = proposer.propose(image, image_id=ctx.sample.id)
    np.testing.assert_array_equal(again.masks, proposals.masks)
    np.testing.assert_array_equal(again.scores, proposals.scores)


def check_purifier(purifier, ctx):
    for value in [v for v in np.unique(ctx.gt) if v not in (0, 255)][:3]:
        mask = ctx.gt == value
        out = purifier.purify(mask)
        assert out.dtype == np.bool_ and out.shape == mask.shape
        assert not (out & ~mask).any()  # a subset of the input
    empty = np.zeros((9, 7), bool)
    assert not purifier.purify(empty).any()


def check_encoder(encoder, ctx):
    image = ctx.image
    fm = encoder.encode(image)
    assert isinstance(fm, FeatureMap)
    g = fm.geometry
    assert g.image_hw == image.shape[:2]
    assert fm.tokens.dtype == np.float32 and fm.tokens.ndim == 3
    assert fm.tokens.shape[:2] == g.grid_hw
    rh, rw = g.resized_hw
    assert g.grid_hw == (-(-rh // g.patch_size), -(-rw // g.patch_size))
    assert np.isfinite(fm.tokens).all()
    (batched,) = encoder.encode_batch([image])
    assert batched.geometry == g and batched.tokens.shape == fm.tokens.shape


def _feature_map(ctx) -> FeatureMap:
    """Real tokens: the tiny dinov2 on the real photo."""
    if "feature-map" not in ctx.made:
        ctx.made["feature-map"] = cb.BUILDERS[("encoder", "dinov2")](ctx).encode(ctx.image)
    return ctx.made["feature-map"]


def check_aggregator(aggregator, ctx):
    from PIL import Image

    fm = _feature_map(ctx)
    h, w = ctx.image.shape[:2]
    gt = np.asarray(Image.fromarray(ctx.gt.astype(np.uint8)).resize((w, h), Image.NEAREST))
    masks = [gt == v for v in np.unique(gt) if v != 255]
    masks.append(np.zeros((h, w), bool))  # nothing to pool: an all-zero row
    vectors = aggregator.aggregate(fm, np.stack(masks))
    assert vectors.dtype == np.float32 and vectors.shape == (len(masks), fm.dim)
    norms = np.linalg.norm(vectors, axis=1)
    # each row unit length, or all zero where nothing could be pooled (a region smaller than a patch)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0)), norms
    largest = int(np.argmax([m.sum() for m in masks]))
    assert abs(norms[largest] - 1) < 1e-4 and norms[-1] == 0
    assert np.isfinite(vectors).all()


def check_index(index, ctx):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.arange(60) % 5
    index.add(vectors, labels)
    assert len(index) == 60
    result = index.search(vectors[:7], 4)
    assert isinstance(result, SearchResult)
    sims, found = result
    assert sims.shape == found.shape == (7, 4)
    assert sims.dtype == np.float32 and found.dtype == np.int32
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-4)  # each query finds itself
    np.testing.assert_array_equal(found[:, 0], labels[:7])
    assert set(found.ravel().tolist()) <= set(labels.tolist())


CHECKS = {
    "dataset": check_dataset,
    "labeler": check_labeler,
    "proposer": check_proposer,
    "purifier": check_purifier,
    "encoder": check_encoder,
    "aggregator": check_aggregator,
    "index": check_index,
}


def test_checks_cover_every_kind():
    assert set(CHECKS) == set(KINDS)
