"""Errors of the QEMU layer.

Every error carries what failed, with which input, and what to do next, so the task layer can
print ``str(e)`` as a one-line (or few-line) user message instead of a traceback.
"""

from __future__ import annotations


class QemuError(RuntimeError):
    """Base class: a machine, image, console or SSH operation that cannot go on."""


class ImageError(QemuError):
    """An image cannot be created, opened or written (sealed, has overlays, missing, bad key)."""


class LockBusy(QemuError):
    """A resource (image, machine) is held by a live process; the message names it and the fix."""


class MachineError(QemuError):
    """QEMU failed to start, exited early, or did not stop."""


class ConsoleError(QemuError):
    """The serial console timed out, closed, or showed a fail-fast pattern.

    ``transcript`` is the path of the boot's transcript, ``tail`` its last lines, so the user sees
    where the guest was without opening files.
    """

    def __init__(self, message: str, transcript: str | None = None, tail: str = "") -> None:
        full = message
        if transcript:
            full += f" (transcript: {transcript})"
        if tail:
            full += "\n--- last console lines ---\n" + tail
        super().__init__(full)
        self.transcript = transcript
        self.tail = tail


class SshError(QemuError):
    """SSH could not connect, authenticate, or run a command."""


class HostKeyMismatch(SshError):
    """The guest presented a host key different from the one pinned at its first boot."""
