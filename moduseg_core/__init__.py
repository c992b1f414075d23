"""ModuSeg: training-free weakly supervised semantic segmentation from swappable plugins.

The core is light: protocols, the method's rules in numpy, the plugin registry.
Components (and their heavy libraries) are built on demand::

    import moduseg_core as ms
    encoder = ms.get_component("encoder", "dinov2", model="facebook/dinov2-small")
    ms.list_components("proposer")

    seg = ms.Segmenter.from_bank("banks/voc")    # a saved bank → segment images (moduseg_core.pipeline.segmenter)
    pred = seg("photo.jpg")

The package is three layers (docs/architecture.md): ``contract`` (types, protocols, options, the registry, the
configuration), ``files`` (reading, atomic writing, output folders, reports) on the contract, and ``pipeline`` (bank,
inference, runs) on both; the jobs (``executors``, ``cache``, ``ablate``, ``bench``, ``prepare``, ``cli``) sit on top.
Modules moved there in 0.2 still import from their old top-level paths for one release (``_moved``).
"""

from types import ModuleType

from moduseg_core import _moved
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.hookspecs import hookimpl
from moduseg_core.contract.options import NoOptions, Options
from moduseg_core.contract.plugins import KINDS, ComponentSpec, get_component, list_components
from moduseg_core.contract.types import FeatureMap, Geometry, Prediction, Proposals, Sample, SearchResult
from moduseg_core.pipeline.segmenter import Segmentation, Segmenter

__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str) -> ModuleType:
    return _moved.old_attribute(name)


__all__ = [
    "KINDS",
    "ComponentSpec",
    "FeatureMap",
    "Geometry",
    "ModusegError",
    "NoOptions",
    "Options",
    "Prediction",
    "Proposals",
    "Sample",
    "SearchResult",
    "Segmentation",
    "Segmenter",
    "get_component",
    "hookimpl",
    "list_components",
    "__version__",
]
