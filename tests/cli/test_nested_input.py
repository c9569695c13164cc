"""`knightwatch status` shows a stored record nested too deep as undecodable, never a traceback.

msgspec raises `RecursionError` (not a `DecodeError`) for JSON nested deeper than it
decodes inside a field a record skips. Before, one such admission verdict (the bucket is
writable by the admission service's credentials) made `status` die with a traceback, so
nobody could see the fleet's kill state while it stood. `up` as a real process (real
nats-server, real nodes), status run as the other CLI tests run it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.plane.connect import control_plane, recorded_url
from knightwatch.control.plane.protocol import Bucket
from knightwatch.trust.identity import load_signer

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)
DEEP = b'{"node": "n9", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def test_status_shows_a_deep_admission_verdict_as_undecodable(fleet_up: Path) -> None:
    keys = fleet_up / "trust" / "keys"
    admission = load_signer(keys / "admission.key", "admission")

    async def store_deep_verdict() -> None:
        async with control_plane(recorded_url(fleet_up), fleet_up, "t", signer=admission) as plane:
            await plane.put_record(Bucket.ADMISSION, "n9", DEEP)

    asyncio.run(store_deep_verdict())
    args = ["status", "--state-dir", str(fleet_up), "--key", str(keys / "carol.key")]
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 0, result.output
    assert "UNDECODABLE" in result.output and "recursion" in result.output, result.output
    assert "kill switch entries" in result.output  # the rest is still shown
