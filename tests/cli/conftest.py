"""The CLI tests of `audit` use the flight-recorder fixtures of tests/audit."""

from __future__ import annotations

from ..audit.conftest import audit_path, clock, write_file

__all__ = ["audit_path", "clock", "write_file"]
