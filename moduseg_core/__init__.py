"""ModuSeg: training-free weakly supervised semantic segmentation from swappable plugins.

The core is light: protocols, the method's rules in numpy, the plugin registry.
Components (and their heavy libraries) are built on demand::

    import moduseg_core as ms
    encoder = ms.get_component("encoder", "dinov2", model="facebook/dinov2-small")
    ms.list_components("proposer")

    seg = ms.Segmenter.from_bank("banks/voc")    # a saved bank → segment images (moduseg_core.segmenter)
    pred = seg("photo.jpg")
"""

from .errors import ModusegError
from .hookspecs import hookimpl
from .options import NoOptions, Options
from .plugins import KINDS, ComponentSpec, get_component, list_components
from .segmenter import Segmentation, Segmenter
from .types import FeatureMap, Geometry, Prediction, Proposals, Sample, SearchResult

__version__ = "0.1.0"

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
