"""The two error types of the MAP-E model.

Every impossible parameter raises :class:`MapeParameterError`, every malformed option raises
:class:`CodecError`.  Callers (the calculator, the testbed, the reference CE) catch exactly
these two and turn them into one-line messages; anything else escaping ``mape`` is a bug.
"""

from __future__ import annotations


class MapeError(ValueError):
    """Base of everything ``mapelab.mape`` raises on purpose."""


class MapeParameterError(MapeError):
    """A MAP-E parameter outside what RFC 7597/7598 allow.

    ``parameter`` names the input the way a user typed it (``ea-len``, ``psid-offset``, …),
    ``allowed`` says what would have been accepted, so the message tells the fix.
    """

    def __init__(self, parameter: str, value: object, allowed: str, why: str = "") -> None:
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        self.why = why
        text = f"{parameter} {value}: allowed {allowed}"
        if why:
            text += f" ({why})"
        super().__init__(text)


class CodecError(MapeError):
    """Bytes that are not a valid RFC 7598 option; ``offset`` is where the problem starts."""

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(f"at byte {offset}: {reason}")
