"""The paper's data structures: the Correlation DTree and WTree (``correlation``)."""

from .correlation import CHUNK_BYTES, CorrelationDTree, CorrelationWTree, forest_nbytes

__all__ = ["CHUNK_BYTES", "CorrelationDTree", "CorrelationWTree", "forest_nbytes"]
