"""The project's one error base: what the CLI turns into a one-line message (exit 2).

Every error raised for bad input, a bad config or a damaged file derives from
:class:`BilafError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BilafError(ValueError):
    """Bad input, config or file: the message names the thing and the fix."""


class InputError(BilafError):
    """An input file or option is missing, unreadable or malformed."""


class OutputError(BilafError):
    """An output path would replace something that is not this command's earlier output."""
