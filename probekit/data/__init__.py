"""Datasets for probekit: a registry of real datasets (offline and online), deterministic
stratified splits with a per-class cap, a corruption shift dial, and a reference set.

```python
from probekit.data import load_dataset, list_datasets, reference_set
ds = load_dataset("emoji", split="train", seed=0, max_per_class=50)
ds = load_dataset("emoji+gaussian_noise@3")      # the same images, corrupted
ds = load_dataset("folder:/data/imagenette2")    # any folder of class sub-folders
img, label = ds[0]                               # RGB PIL image at native size, int
ds.identity()                                    # what a feature store is keyed on
```
"""

from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .dataset import ImageDataset
from .errors import DatasetDownloadError, EmptyDatasetError, InvalidDatasetIdError, UnknownDatasetError
from .registry import known_ids, list_datasets, load_dataset, parse_id, reference_set
from .splits import SPLITS

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "SPLITS",
    "DatasetDownloadError",
    "EmptyDatasetError",
    "ImageDataset",
    "InvalidDatasetIdError",
    "UnknownDatasetError",
    "corrupt",
    "known_ids",
    "list_datasets",
    "load_dataset",
    "parse_id",
    "reference_set",
]
