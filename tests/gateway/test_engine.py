"""The engine loader and the guarded callbacks: a missing engine is a clear error, and no
exception ever reaches QuickFIX (which would end the process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from knightwatch.gateway import engine
from knightwatch.gateway.engine import CallbackErrors, FixEngineMissing, GatewayError, guarded


def test_the_engine_is_installed_by_the_projects_own_files() -> None:
    q = engine.fix()
    assert q.__name__ == "quickfix"
    assert engine.spec_path("FIX.4.4").name == "FIX44.xml"
    assert engine.spec_path("FIX.4.2").is_file()


def test_a_missing_engine_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_fix", None)
    monkeypatch.setitem(sys.modules, "quickfix", None)  # import fails as if not installed
    with pytest.raises(FixEngineMissing, match=r"pip install 'knightwatch\[fix\]'") as err:
        engine.fix()
    assert isinstance(err.value, ImportError) and isinstance(err.value, GatewayError)
    assert "7.5 CPU-minutes" in str(err.value)


def test_the_cli_says_so_without_a_traceback() -> None:
    code = (
        "import sys; sys.modules['quickfix'] = None\n"
        "from knightwatch.cli.app import app\n"
        "app(['venue', '--fix', '--port', '1'])\n"
    )
    env = {**os.environ, "COLUMNS": "400"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 2
    assert "knightwatch[fix]" in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_unknown_begin_string_is_refused() -> None:
    with pytest.raises(GatewayError, match=r"FIX\.4\.2 or FIX\.4\.4"):
        engine.spec_path("FIX.5.0")


def test_guarded_contains_every_exception_and_runs_the_error_path() -> None:
    errors = CallbackErrors(keep=2)
    seen: list[str] = []

    def boom() -> None:
        raise KeyError("x")

    guarded(errors, "fromApp", boom, seen.append)
    assert errors.count == 1 and seen == ["fromApp: KeyError: 'x'"]

    def bad_error_path(text: str) -> None:
        raise RuntimeError("error path broken too")

    guarded(errors, "fromApp", boom, bad_error_path)  # nothing escapes, both recorded
    assert errors.count == 3 and len(errors.last) == 2


def test_guarded_lets_the_engines_own_exceptions_through() -> None:
    q = engine.fix()

    def unsupported() -> None:
        raise q.UnsupportedMessageType()

    with pytest.raises(q.UnsupportedMessageType):
        guarded(CallbackErrors(), "fromApp", unsupported, passthrough=(q.UnsupportedMessageType,))
