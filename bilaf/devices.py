"""Where torch work runs: the one device resolver of the stages and the selection methods.

Imports nothing heavy at module level (torch only inside the functions that need it) and nothing
of the workflow or of ``bilaf.selection``, so every part of the package may use it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from bilaf.errors import BilafError, InputError

if TYPE_CHECKING:
    import torch


class DeviceError(InputError):
    """A requested device is not a torch device."""


def resolve_device(
    device: str | torch.device | None = None, error: type[BilafError] = DeviceError
) -> torch.device:
    """The ``torch.device`` to compute on: ``device`` (a str or torch.device) if given, else
    CUDA when torch sees a GPU, else CPU; ``error`` (naming ``device``) when it is no device."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise error(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda')") from err


def device_name(device: str | torch.device | None = None) -> str:
    """:func:`resolve_device` as a string ('cpu', 'cuda', 'cuda:1'): what stages pass around."""
    return str(resolve_device(device))


def device_used(requested: str | None) -> str:
    """The device a command ran on, for its manifest, without importing torch: as requested,
    else CUDA when torch was loaded (by the command's work) and sees a GPU, else CPU."""
    if requested or "torch" not in sys.modules:
        return requested or "cpu"
    return device_name()


def set_threads(threads: int | None) -> None:
    """Cap torch's CPU threads at ``threads`` (None: torch's own default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
