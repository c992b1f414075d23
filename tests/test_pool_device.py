"""The aggregators' torch path (what runs on a GPU) against the numpy path, run here on torch's CPU device."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moduseg_builtins.aggregators._pool_torch import pool_on_device

from moduseg_core import ModusegError, get_component
from moduseg_core.contract.types import FeatureMap, Geometry


def _case(seed: int, geometry: Geometry, n: int = 40):
    rng = np.random.default_rng(seed)
    gh, gw = geometry.grid_hw
    tokens = rng.standard_normal((gh, gw, 32)).astype(np.float32)
    height, width = geometry.image_hw
    masks = np.zeros((n, height, width), bool)
    for i in range(n - 2):
        y, x = rng.integers(0, height - 5), rng.integers(0, width - 5)
        masks[i, y : y + rng.integers(3, height), x : x + rng.integers(3, width)] = True
    masks[-2, 0, 0] = True  # one pixel: a tiny weight, still pooled
    return FeatureMap(tokens, geometry), masks  # masks[-1] is empty: skipped (zero row)


@pytest.mark.parametrize("name, threshold", [("soft", None), ("hard", 0.5)])
@pytest.mark.parametrize(
    "geometry",
    [Geometry.native(90, 130, 14), Geometry((90, 130), (60, 87), (70, 98), 14), Geometry.native(64, 48, 16)],
)
def test_device_pooling_equals_numpy_pooling(name, threshold, geometry):
    features, masks = _case(3, geometry)
    expected = get_component("aggregator", name).aggregate(features, masks)
    got = pool_on_device(features, masks, torch.device("cpu"), threshold)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert not got[-1].any()
    pooled = np.abs(got[:-1]).sum(axis=1) > 0
    # soft pools every non-empty mask; hard drops those covering no patch by half
    assert pooled.all() if threshold is None else 0 < pooled.sum() < len(pooled)


def test_cuda_device_without_cuda_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModusegError, match=r"device='cuda'.*set device=cpu or auto"):
        get_component("aggregator", "soft", device="cuda")
    assert get_component("aggregator", "soft", device="auto").device is None  # falls back to numpy


def test_device_is_a_runtime_option_left_out_of_fingerprints():
    from moduseg_core.contract.plugins import build_options

    cpu = build_options("aggregator", "hard", {"device": "cpu"})
    gpu = build_options("aggregator", "hard", {"device": "cuda:1"})
    assert cpu.identity() == gpu.identity() == {"threshold": 0.5}
    with pytest.raises(ModusegError, match="device must be .* not .gpu."):
        build_options("aggregator", "soft", {"device": "gpu"})
