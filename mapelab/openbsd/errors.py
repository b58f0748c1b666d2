"""Errors of the OpenBSD layer: each message names the input that failed and what to do next.

One base class so the task layer can turn any of them into a one-line ``Exit(code=2)``
without knowing which step failed.
"""

from __future__ import annotations


class OpenBSDError(Exception):
    """Base: a user-facing failure with a one-line message (the input, and the fix)."""


class SeriesError(OpenBSDError):
    """A series file that cannot be used (bad TOML, a missing key, an unpinned source)."""


class FetchError(OpenBSDError):
    """A download that failed or did not match its pinned sha256."""


class UnreachableError(FetchError):
    """The host could not be reached at all: the one download failure a test may skip on.

    A sha256 mismatch, an HTTP error or a truncated transfer are plain :class:`FetchError`s:
    they mean the bytes are wrong or missing, not that this machine has no route.
    """

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


class SignifyError(OpenBSDError):
    """A signature, key or checksum list that does not verify."""


class SourceError(OpenBSDError):
    """OpenBSD sources that cannot be obtained or do not look like /usr/src."""


class PatchError(OpenBSDError):
    """A patch that cannot be parsed or refreshed."""


class SubmissionError(OpenBSDError):
    """A submission that cannot be prepared (no topic, no patch text)."""


class ConsumerDataError(OpenBSDError):
    """A list of ABI consumers (``data/*_consumers.toml``) that breaks its own rules."""
