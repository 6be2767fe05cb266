"""Multi-vector (late-interaction) documents: codebook, IVF cells, compressed tiers, MaxSim.

`MultiVectorIndex` is the public entry point; the phases live in `codec` (training and
encoding), `reduce` (token pooling and pruning), `view` (the layout searches read), `search`
(the PLAID-style pipeline), `rowfile` and `persist` (files), `params` (bounds).
"""

from vecdb.index.multivector.index import MultiVectorIndex

__all__ = ["MultiVectorIndex"]
