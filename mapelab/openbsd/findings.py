"""A reviewer-check result: what is wrong, where, and how bad.  Shared by style, mandoc and submission."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    check: str      # style, mandoc, whitespace, regress, applies
    path: str
    line: int | None
    message: str
    severity: str = "error"  # error: a reviewer would send it back; warning: worth a look

    def text(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity}: {where}: [{self.check}] {self.message}"

    def as_dict(self) -> dict:
        return asdict(self)
