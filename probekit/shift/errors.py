"""Errors and warnings of the shift measures: what was wrong with the inputs and what to do."""

from __future__ import annotations

from probekit.errors import ProbekitError


class ShiftInputError(ProbekitError, ValueError):
    """Feature sets a shift measure cannot compare (wrong shape, too few rows, mismatched keys)."""


class SmallSampleWarning(UserWarning):
    """A sample too small for its dimension: the estimate is biased (FD with n < d, for example).

    The Fréchet distance of Gaussian fits is biased upwards roughly like ``d / n`` (Chong and
    Forsyth, "Effectively unbiased FID", CVPR 2020): compare such values only between feature
    sets of the same ``n`` and ``d``, or raise ``n`` above ``d``.
    """
