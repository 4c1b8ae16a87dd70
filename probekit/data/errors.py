"""Errors the dataset registry raises: each says what was wrong and what to do next."""

from __future__ import annotations

from ..errors import AssetMissingError, ProbekitError, UnknownDatasetError

__all__ = [
    "AssetMissingError",
    "DatasetDownloadError",
    "EmptyDatasetError",
    "InvalidDatasetIdError",
    "UnknownDatasetError",
]


class DatasetDownloadError(ProbekitError, OSError):
    """An online dataset whose files are absent and could not be downloaded."""


class InvalidDatasetIdError(ProbekitError, ValueError):
    """A dataset id that does not parse (bad corruption name, severity, split ...)."""


class EmptyDatasetError(ProbekitError, ValueError):
    """A dataset (folder, split) that holds no usable image."""
