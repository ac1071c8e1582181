"""Exceptions of the bag package: each names the run, file and topic involved."""
from __future__ import annotations


class BagError(Exception):
    """Base class: something is wrong with a recorded run."""


class RunExistsError(BagError, FileExistsError):
    """The run folder exists already; runs are never overwritten."""


class MissingTopicError(BagError, KeyError):
    """A requested topic is not in the run (or has another type than expected)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ''


class EmptyBagError(BagError):
    """The run (or a requested topic) holds no messages."""


class CorruptBagError(BagError):
    """A file of the run cannot be read: truncated, missing metadata, or undecodable data."""
