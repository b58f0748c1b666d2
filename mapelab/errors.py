"""The one distinction every layer's errors make: was it the user's input, or did the work fail?

A library error that derives from :class:`InputError` means "the value you gave cannot work;
change it": the task layer prints its one-line message and exits with status 2 before anything
has started.  Every other user-facing error of the library (a testbed that did not come up, a
guest that did not boot) is a failure of the work and exits with status 1.  Layers keep their
own error classes (``ScenarioError``, ``CalcError``, ``TestbedInputError`` …) and mark the
input ones by deriving from this class, so the task layer needs no list of them.
"""

from __future__ import annotations


class InputError(ValueError):
    """A value the user gave that cannot work; the message names it and says what would."""
