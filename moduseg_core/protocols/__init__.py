"""The component protocols, one module each."""

from .aggregator import Aggregator
from .dataset import Dataset
from .encoder import FeatureEncoder
from .index import BankIndex
from .labeler import Labeler
from .proposer import MaskProposer
from .purifier import Purifier

__all__ = ["Aggregator", "BankIndex", "Dataset", "FeatureEncoder", "Labeler", "MaskProposer", "Purifier"]
