"""The component kinds, listed once, in data-path order.

Everything that walks the kinds (the registry, the config, the runner, ``plugins list``) reads
them from here. Nothing is imported: this module is safe anywhere.
"""

from __future__ import annotations

#: Every component kind, in the order of the data path.
KINDS: tuple[str, ...] = ("dataset", "labeler", "proposer", "purifier", "encoder", "aggregator", "index")

#: The kinds a run config chooses besides its dataset.
RUN_KINDS: tuple[str, ...] = KINDS[1:]

#: The kinds whose choice decides a memory bank (the proposer and the index do not).
BANK_KINDS: tuple[str, ...] = ("labeler", "purifier", "encoder", "aggregator")

#: kind → the hook a plugin implements to register components of that kind.
HOOKS: dict[str, str] = {
    "dataset": "register_datasets",
    "labeler": "register_labelers",
    "proposer": "register_proposers",
    "purifier": "register_purifiers",
    "encoder": "register_encoders",
    "aggregator": "register_aggregators",
    "index": "register_indexes",
}

#: kind → the protocol class's name in ``moduseg_core.contract.protocols``.
PROTOCOLS: dict[str, str] = {
    "dataset": "Dataset",
    "labeler": "Labeler",
    "proposer": "MaskProposer",
    "purifier": "Purifier",
    "encoder": "FeatureEncoder",
    "aggregator": "Aggregator",
    "index": "BankIndex",
}

__all__ = ["BANK_KINDS", "HOOKS", "KINDS", "PROTOCOLS", "RUN_KINDS"]
