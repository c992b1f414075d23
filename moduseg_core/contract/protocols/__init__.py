"""The component protocols, one module each."""

from moduseg_core.contract.protocols.aggregator import Aggregator
from moduseg_core.contract.protocols.dataset import Dataset
from moduseg_core.contract.protocols.encoder import FeatureEncoder
from moduseg_core.contract.protocols.index import BankIndex
from moduseg_core.contract.protocols.labeler import Labeler
from moduseg_core.contract.protocols.proposer import MaskProposer
from moduseg_core.contract.protocols.purifier import Purifier

__all__ = ["Aggregator", "BankIndex", "Dataset", "FeatureEncoder", "Labeler", "MaskProposer", "Purifier"]
