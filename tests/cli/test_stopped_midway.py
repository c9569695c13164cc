"""A command stopped midway says what it leaves (`cli.fleet._run(stopped_says=...)`).

`approve` runs the resume's ramp: stopped by Ctrl-C or a SIGTERM it ended with nothing said,
and the operator took the scope for ramping under watch while it stayed at the stage it had
reached with nothing watching it for a trip. A drill's SIGTERM stops what it started
(`test_drill_signals.py`); the same path says so for both, with 143 for a SIGTERM and 130
for Ctrl-C, after the command's own cleanup ran.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import typer

from knightwatch.cli import fleet
from knightwatch.cli.fleet import RAMP_STOPPED, _run


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    said: list[str] = []
    monkeypatch.setattr(fleet.console, "print", lambda text, **_: said.append(str(text)))
    return said


def test_a_sigterm_midway_runs_the_cleanup_and_says_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said = _capture(monkeypatch)
    cleaned: list[bool] = []

    async def ramping() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    with pytest.raises(typer.Exit) as stopped:
        _run(ramping, stopped_says=RAMP_STOPPED)
    assert stopped.value.exit_code == 143
    assert cleaned == [True]
    assert said and "stopped by SIGTERM" in said[-1] and "nothing watches it" in said[-1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again


def test_ctrl_c_midway_says_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    said = _capture(monkeypatch)

    async def ramping() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as stopped:
        _run(ramping, stopped_says=RAMP_STOPPED)
    assert stopped.value.exit_code == 130
    assert said and "stopped by Ctrl-C" in said[-1] and "kill it" in said[-1]


def test_a_command_that_leaves_nothing_says_nothing_on_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said = _capture(monkeypatch)

    async def listing() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as stopped:
        _run(listing)
    assert stopped.value.exit_code == 130
    assert said == []
