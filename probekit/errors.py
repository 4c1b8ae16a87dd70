"""Errors a user can act on: each message says what was wrong and what to do next."""

from __future__ import annotations


class ProbekitError(Exception):
    """Base class for every error probekit raises on purpose."""


class UnknownModelError(ProbekitError, KeyError):
    """A model name that timm and probekit do not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NotAViTError(ProbekitError, TypeError):
    """A model without the pre-norm ViT block structure the site taxonomy needs."""


class WeightsMismatchError(ProbekitError, ValueError):
    """Weights that do not fit the architecture they are loaded into."""


class WeightsFileError(ProbekitError, ValueError):
    """A weights file that cannot be read, or holds no state dict."""


class AssetMissingError(ProbekitError, FileNotFoundError):
    """An offline asset (package, file) that has not been provisioned yet."""


class FingerprintMismatchError(ProbekitError, RuntimeError):
    """A converted model whose outputs differ from the stored fingerprint."""


class UnknownDatasetError(ProbekitError, KeyError):
    """A dataset id the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


class MissingTableError(ProbekitError, FileNotFoundError):
    """A result table a study reads was never written: the message names the notebook that writes it."""


class NonFiniteFeaturesError(ProbekitError, ValueError):
    """Stored features with inf or NaN values (float16 overflow at extraction, or a broken model)."""

    @classmethod
    def for_keys(cls, bad: list[str]) -> NonFiniteFeaturesError:
        return cls(
            f"{len(bad)} feature key(s) hold inf or NaN values, e.g. {bad[:3]}: the activations exceed the "
            "float16 range they were stored in (extraction warned), or the model produced NaN. Re-extract with "
            "storage_dtype='float32' (probekit extract --storage-dtype float32) or leave these keys out."
        )
