"""Distribution-shift measures between a reference set's and a downstream set's frozen features.

Paper 1 (Odonnat et al. 2026) attributes the decline of deeper layers to the shift between
pretraining and downstream data; this package turns that shift into numbers, per layer, site and
pool. Modules, one measure each:

* :mod:`~probekit.shift.frechet`: Fréchet distance of Gaussian fits (symmetric eigen route).
* :mod:`~probekit.shift.mmd`: unbiased MMD², RBF (bandwidth from the reference alone) and linear kernels, blockwise.
* :mod:`~probekit.shift.domain`: cross-validated domain-classifier accuracy, proxy A-distance.
* :mod:`~probekit.shift.table`: every measure for every key of a store pair, bootstrap CIs.

A library over arrays and feature stores: extracting the stores is the shift study's job
(:func:`probekit.studies.shift.measure_shift`).
"""

from probekit.shift.domain import DomainResult, domain_classifier, proxy_a_distance
from probekit.shift.errors import ShiftInputError, SmallSampleWarning
from probekit.shift.frechet import frechet_distance, frechet_from_stats, gaussian_fit, trace_sqrt_product
from probekit.shift.mmd import median_bandwidth, mmd2, reference_bandwidth
from probekit.shift.table import COLUMNS, MEASURES, shift_keys, shift_table

__all__ = [
    "COLUMNS",
    "MEASURES",
    "DomainResult",
    "ShiftInputError",
    "SmallSampleWarning",
    "domain_classifier",
    "frechet_distance",
    "frechet_from_stats",
    "gaussian_fit",
    "median_bandwidth",
    "mmd2",
    "proxy_a_distance",
    "reference_bandwidth",
    "shift_keys",
    "shift_table",
    "trace_sqrt_product",
]
