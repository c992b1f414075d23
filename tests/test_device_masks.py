"""Masks that stay on the proposer's device (``Proposals.device_masks``) until the pipeline needs them on the host.

torch's CPU device stands in for a GPU here: the code path is the one a GPU takes (tensors in, the aggregator's torch
pooling, the host copy made once and only for the masks that survive)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import plugins_only, val_photos
from contract_builders import save_eomt
from encoder_checkpoints import save_dinov2

from moduseg_core import Proposals, get_component
from moduseg_core.contract.components import Built
from moduseg_core.contract.config import MethodConfig
from moduseg_core.pipeline.bank import Bank
from moduseg_core.pipeline.inference import Predictor


def _random(n: int = 6, height: int = 7, width: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = rng.random((n, height, width)) < 0.3
    masks[2] = False  # one empty mask
    return masks, rng.random(n).astype(np.float32)


def test_device_proposals_answer_as_host_proposals():
    masks, scores = _random()
    host, device = Proposals(masks, scores), Proposals(torch.from_numpy(masks.copy()), scores)
    assert host.device_masks is None and isinstance(device.device_masks, torch.Tensor)
    assert device.shape == host.shape == (6, 7, 9) and len(device) == 6
    assert device.areas().dtype == np.int64 and np.array_equal(device.areas(), host.areas())
    assert device.areas()[2] == 0
    for keep in (host.areas() >= 10, np.array([4, 0, 2]), np.array([], np.int64), np.zeros(6, bool)):
        a, b = host.select(keep), device.select(keep)
        assert isinstance(b.device_masks, torch.Tensor), "selection happens where the masks are"
        assert np.array_equal(b.masks, a.masks) and np.array_equal(b.scores, a.scores)
    assert device.select(np.ones(6, bool)) is device and host.select(np.ones(6, bool)) is host
    assert "on cpu" in repr(device) and "6 masks of 7×9" in repr(host)


def test_the_host_copy_is_made_on_the_first_read_and_kept():
    masks, scores = _random()
    device = Proposals(torch.from_numpy(masks.copy()), scores)
    first = device.masks
    assert first.dtype == np.bool_ and first.flags.c_contiguous and np.array_equal(first, masks)
    assert device.masks is first


def test_device_proposals_travel_as_host_arrays():
    """Pickled (Ray, worker processes) as numpy: a receiver needs no torch and no device."""
    masks, scores = _random()
    back = pickle.loads(pickle.dumps(Proposals(torch.from_numpy(masks.copy()), scores)))
    assert back.device_masks is None and np.array_equal(back.masks, masks) and np.array_equal(back.scores, scores)


def test_a_tensor_that_is_not_bool_is_refused_naming_its_dtype():
    with pytest.raises(ValueError, match=r"Proposals.masks must be a bool numpy array or torch tensor, got Tensor of "
                                         r"dtype torch.uint8"):
        Proposals(torch.zeros((1, 2, 2), dtype=torch.uint8), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match=r"Proposals.masks must be N×H×W, got shape \(2, 2\)"):
        Proposals(torch.zeros((2, 2), dtype=torch.bool), np.zeros(2, np.float32))


# -- the pipeline with real components: EoMT proposals, DINOv2 features, pooling on torch's device --------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory, coco_mini):
    with plugins_only("proposers,encoders,aggregators,indexes"):
        root = tmp_path_factory.mktemp("device-masks")
        save_dinov2(root / "dinov2")
        proposer = get_component("proposer", "eomt", model=str(save_eomt(root / "eomt", 160)), score_threshold=0.0)
        encoder = get_component("encoder", "dinov2", model=str(root / "dinov2"), device="cpu")
        on_host = get_component("aggregator", "soft")
        on_device = get_component("aggregator", "soft")
        yield proposer, encoder, on_host, on_device, val_photos(coco_mini, 2, 3)


class Recording:
    """The aggregator as it is, recording what kind of masks it was given."""

    def __init__(self, inner, device=None):
        self.inner = inner
        if device is not None:  # the torch pooling path, on torch's CPU device
            inner.device, inner.takes_device_masks = device, True
        self.takes_device_masks = inner.takes_device_masks
        self.given: list[type] = []

    def aggregate(self, features, masks):
        self.given.append(type(masks))
        return self.inner.aggregate(features, masks)


def _predictor(proposer, encoder, aggregator, bank=None, **method) -> Predictor:
    def built(kind, component):
        return Built(kind, getattr(component, "name", kind), getattr(component, "options", None), component)

    return Predictor(bank, built("proposer", proposer), built("encoder", encoder), built("aggregator", aggregator),
                     MethodConfig(**{"min_mask_area": 20, **method}))


def test_a_device_pooling_aggregator_takes_the_proposers_masks_as_they_are(parts):
    proposer, encoder, on_host, on_device, images = parts
    found = proposer.propose(images[0])
    assert isinstance(found.device_masks, torch.Tensor), "eomt keeps its masks on its device"
    host_side, device_side = Recording(on_host), Recording(on_device, torch.device("cpu"))
    ids = [None] * len(images)
    want = _predictor(proposer, encoder, host_side).propose_and_describe(images, ids)
    got = _predictor(proposer, encoder, device_side).propose_and_describe(images, ids)
    assert host_side.given == [np.ndarray] * len(images)
    assert device_side.given == [torch.Tensor] * len(images)
    for (masks_a, vectors_a), (masks_b, vectors_b) in zip(want, got, strict=True):
        assert len(masks_a) > 0 and isinstance(masks_b, torch.Tensor), "decisions take the device masks"
        assert torch.equal(masks_a, masks_b)  # the same masks survive the area check and pooling
        np.testing.assert_allclose(vectors_b, vectors_a, atol=2e-5)  # numpy vs torch products: float rounding


def test_the_area_check_runs_on_the_device_and_copies_nothing(parts):
    proposer, encoder, on_host, _, images = parts
    predictor = _predictor(proposer, encoder, on_host)
    found = proposer.propose(images[0])
    kept = predictor.checked(found, images[0])
    assert isinstance(kept.device_masks, torch.Tensor) and found._host is None  # nothing came to the host
    assert 0 < len(kept) <= len(found)
    assert np.array_equal(kept.masks, found.masks[found.masks.sum(axis=(1, 2)) >= 20])


class OnTheHost:
    """The same proposer, its masks handed over as numpy arrays: the host path of every later stage."""

    def __init__(self, inner):
        self.inner = inner

    def propose(self, image, *, image_id=None):
        found = self.inner.propose(image, image_id=image_id)
        return Proposals(found.masks, found.scores)


def test_decisions_on_the_device_paint_the_host_paths_maps(parts):
    """NMS and painting where the masks are (method/nms_device.py) against the host path, with real EoMT masks,
    real DINOv2 vectors and a real exact index over a bank of those vectors with random classes."""
    proposer, encoder, on_host, _, images = parts
    ids = [None] * len(images)
    described = _predictor(proposer, encoder, on_host).propose_and_describe(images, ids)
    vectors = np.concatenate([v for _, v in described])
    labels = np.random.default_rng(0).integers(0, 4, len(vectors)).astype(np.int32)
    index = get_component("index", "exact")
    index.add(vectors, labels)
    bank = Bank(vectors, labels, ["background", "a", "b", "c"], {}, index)
    for nms_iou in (0.4, 0.05):  # 0.05: masks of one class that touch suppress each other
        on_device = _predictor(proposer, encoder, on_host, bank, nms_iou=nms_iou, top_k=3)
        host = _predictor(OnTheHost(proposer), encoder, on_host, bank, nms_iou=nms_iou, top_k=3)
        got, want = on_device.predict_batch(images, ids), host.predict_batch(images, ids)
        for b, a in zip(got, want, strict=True):
            assert a.semantic.dtype == b.semantic.dtype and np.array_equal(b.semantic, a.semantic)
            assert np.array_equal(b.labels, a.labels) and np.array_equal(b.scores, a.scores)
            assert isinstance(b.masks, np.ndarray) and np.array_equal(b.masks, a.masks)
        assert sum(len(p.labels) for p in want) > 0 and any((p.semantic > 0).any() for p in want)
