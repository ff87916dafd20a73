"""The embedded synthetic RSNA-style head CT dataset (see docs/synthetic-data.md).

`write_dataset` is the one entry point: other stages' tests call it for a tiny set
(4 patients x 6 slices x 128 px in a few seconds, all quirks present).
"""

from .dataset import write_dataset
from .plan import QUIRKS

__all__ = ["QUIRKS", "write_dataset"]
