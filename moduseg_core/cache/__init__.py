"""The stage cache: results of pipeline stages stored under content fingerprints.

Every entry lives at ``$MODUSEG_CACHE/stages/<stage>/<key[:2]>/<key><suffix>`` (default
``~/.cache/moduseg/stages``). A key is the sha256 of what determines the result: the
component's name and non-runtime options (``components.identity``), the plugin that
registered it and its version, the moduseg version, this cache's format, and the content
of the image (a hash of its pixels; an image over ``method.work_pixels`` is proposed and
encoded at its working size, whose pixels are hashed) or of the upstream key. Changing any of them gives
another key, so an entry is never stale for its key; entries are written atomically
(``io.atomic_path``), so a killed process leaves none half-written.

Stages, in data-path order:

========== ===================================================== =====================
stage      key                                                   entry
========== ===================================================== =====================
proposals  proposer, image (pixels + id)                         ``.npz`` packed masks
features   encoder, image                                        ``.npz`` float32 tokens
pooled     proposals key, ``min_mask_area``, encoder, aggregator ``.npz`` vectors
banks      dataset split + files, labeler, purifier, encoder,    directory (a bank)
           aggregator, ``min_region_area``, ``filter_ratio``,
           ``work_pixels``
predictions bank key, proposer, index, ``top_k``, ``nms_iou``,   ``.png`` class map
           ``min_mask_area``, ``work_pixels``, image
scores     predictions key, eval split + files, metric settings  ``.json``
========== ===================================================== =====================

A plugin's output must be a function of its options and input for caching to be valid;
a component that reads files (``precomputed`` proposers and labelers) is keyed by its
options (the folder), not by the files in it: prune the cache after changing them.
Editing moduseg's own code without a version change is the same: ``moduseg cache prune --all``.

The package, one job per module:

- ``store``: keys (``fingerprint``, ``image_digest``, ``component_key``) and ``StageCache``, which
  finds, writes, lists and prunes entries;
- ``formats``: how each stage's entry is written and read;
- ``components``: ``CachedProposer`` / ``CachedEncoder``, components served from the cache and
  built only on a miss;
- ``predictor``: ``CachingPredictor``, the ``Predictor`` whose stages read and fill the cache;
- ``listing``: the text of ``moduseg cache list | size | prune``;
- ``claims``: claim files beside the entries, so that processes sharing the cache (the workers of
  ``ablate --executor ray``) never compute one entry at once; stale claims are taken over.
"""

from moduseg_core.cache.components import CachedEncoder, CachedProposer, cached_built
from moduseg_core.cache.formats import (
    load_features,
    load_pooled,
    load_prediction,
    load_proposals,
    save_features,
    save_pooled,
    save_prediction,
    save_proposals,
)
from moduseg_core.cache.predictor import CachingPredictor
from moduseg_core.cache.store import (
    FORMAT,
    STAGES,
    SUFFIXES,
    Entry,
    StageCache,
    cache_base,
    check_stage,
    component_key,
    fingerprint,
    image_digest,
)

__all__ = [
    "FORMAT",
    "STAGES",
    "SUFFIXES",
    "CachedEncoder",
    "CachedProposer",
    "CachingPredictor",
    "Entry",
    "StageCache",
    "cache_base",
    "cached_built",
    "check_stage",
    "component_key",
    "fingerprint",
    "image_digest",
    "load_features",
    "load_pooled",
    "load_prediction",
    "load_proposals",
    "save_features",
    "save_pooled",
    "save_prediction",
    "save_proposals",
]
