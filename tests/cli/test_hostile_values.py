"""Files whose bytes parse but whose values are hostile: one clear error, never a traceback.

`test_fuzz_inputs.py` feeds every file option files that cannot be parsed. Here the file
parses and a value in it is what a hostile tester (or a typo) would put there: an integer
of 400 or 5000 digits, a duration of 1e-320 or 1e300 seconds (integer nanoseconds of
nothing, or of infinity), an empty allow-list, a record whose time no calendar holds, a
record whose text looks like console markup. A file that is refused names the file and
the field; a record that is shown is shown as it is.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.control.site import Site
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.roster import Roster, roster_envelope, sign_roster

from ..identities import KIT

pytestmark = pytest.mark.timeout(60)

runner = CliRunner()
HUGE = "1" + "0" * 400
"""An integer `math.isfinite` cannot take (it converts to a float first)."""
ENORMOUS = "1" + "0" * 5000
"""More digits than Python converts from text (4300): tomllib's own int() refuses it."""


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"COLUMNS": "250", **(env or {})})
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"{args[:3]}: {type(exc).__name__}: {exc}"  # an exception escaped: a traceback
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


# ---------------------------------------------------------------- limits files

BAD_LIMITS: dict[str, tuple[str, str]] = {
    # name: (file text, what the one error line must say after the file's name)
    "huge-int-fleet": (f"[fleet]\nmax_order_qty = {HUGE}\n", "fleet.max_order_qty: must be at"),
    "huge-int-override": (
        f"[strategy.s1]\nmax_orders_per_s = {HUGE}\n",
        "strategy.s1.max_orders_per_s: must be at",
    ),
    "huge-int-for-a-number": (f"[fleet]\nmax_loss = {HUGE}\n", "fleet.max_loss: must be at"),
    "int-over-64-bits": (
        "[fleet]\nmax_position_qty = 9223372036854775808\n",
        "fleet.max_position_qty: must be at most 9223372036854775807",
    ),
    "huge-negative-int": (f"[fleet]\ntick_size = -{HUGE}\n", "fleet.tick_size: must be at"),
    "5000-digit-int": (f"[fleet]\nmax_order_qty = {ENORMOUS}\n", "an integer with more than"),
    "subnormal-window": (
        "[fleet]\nexecution_window_s = 1e-320\n",
        "fleet.execution_window_s: must be >= 1e-06",
    ),
    "subnormal-duplicate-window": (
        "[fleet]\nduplicate_id_window_s = 5e-324\n",
        "fleet.duplicate_id_window_s: must be >= 1e-06",
    ),
    "duplicate-window-of-1e300-s": (
        "[fleet]\nduplicate_id_window_s = 1e300\nmax_orders_per_s_node = 1\n",
        "fleet.duplicate_id_window_s: must be <=",
    ),
    "lease-of-1e300-s": ("[fleet]\nlease_timeout_s = 1e300\n", "fleet.lease_timeout_s: must be <="),
    "price-age-of-a-nanosecond": (
        "[symbol.AAPL]\nmax_price_age_s = 1e-9\n",
        "symbol.AAPL.max_price_age_s: must be >= 1e-06",
    ),
    "empty-allow-list": (
        "[fleet]\nallowed_symbols = []\n",
        "fleet.allowed_symbols: must not be empty",
    ),
    # what was already refused stays refused
    "nan": ("[fleet]\nmax_loss = nan\n", "fleet.max_loss: must be finite"),
    "inf": ("[fleet]\nmax_order_notional = inf\n", "fleet.max_order_notional: must be finite"),
    "1e400": ("[fleet]\nmax_order_qty = 1e400\n", "fleet.max_order_qty: must be an integer"),
    "negative": ("[fleet]\nmax_loss = -1.0\n", "fleet.max_loss: must be > 0"),
    "zero": ("[fleet]\nmax_order_qty = 0\n", "fleet.max_order_qty: must be >= 1"),
    "string-for-number": ('[fleet]\nmax_order_qty = "100"\n', "fleet.max_order_qty: must be an"),
    "bool-for-int": ("[fleet]\nmax_order_qty = true\n", "not a boolean"),
    "list-for-table": ("fleet = [1]\n", "fleet: must be a table"),
    "misspelled-key": ("[fleet]\nmax_order_qtyy = 5\n", "fleet.max_order_qtyy: unknown key"),
    "duplicated-table": ("[fleet]\nmax_loss = 1.0\n[fleet]\nmax_loss = 2.0\n", "not valid TOML"),
    "symbol-padded": ('[symbol."AAPL "]\nmax_order_qty = 5\n', "must not start or end with"),
    "symbol-control-char": (
        '[fleet]\nrestricted_symbols = ["GME\\u0007"]\n',
        "must not contain control characters",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LIMITS))
def test_limits_check_refuses_a_hostile_value_naming_file_and_field(
    case: str, tmp_path: Path
) -> None:
    text, expected = BAD_LIMITS[case]
    path = tmp_path / "limits.toml"
    path.write_text(text)
    code, out = run(["limits", "check", str(path)])
    assert code == 1, out
    assert "valid\n" not in out.replace("invalid", ""), out
    errors = [line for line in out.splitlines() if expected in line]
    assert errors and str(path) in errors[0], out  # one line: the file, the field, the rule


@pytest.mark.parametrize(
    "case", ["huge-int-fleet", "subnormal-duplicate-window", "lease-of-1e300-s"]
)
def test_a_node_refuses_such_limits_before_it_connects(
    case: str, tmp_path: Path, nats_server: Site
) -> None:
    """The node loads the same file: refused with the same line (exit 2), no Guard built
    from a window of 0 ns or of infinity."""
    path = tmp_path / "limits.toml"
    path.write_text(BAD_LIMITS[case][0])
    code, out = run(
        ["node", "--id", "n1", "--nats-url", nats_server.url, "--state-dir",
         str(tmp_path / "state"), "--key", str(nats_server.key_path("n1")), "--anchor",
         str(nats_server.anchor_path), "--limits", str(path)]
    )  # fmt: skip
    assert code == 2, out
    assert BAD_LIMITS[case][1] in out and str(path) in out, out


def test_the_bounds_themselves_are_sound_limits(tmp_path: Path) -> None:
    """The edges of the new bounds still load, and a Guard is built from them."""
    from knightwatch.guard import Guard

    path = tmp_path / "limits.toml"
    path.write_text(
        "[fleet]\nmax_order_qty = 9223372036854775807\nexecution_window_s = 1e-6\n"
        "max_price_age_s = 315360000.0\nallowed_symbols = ['AAPL']\nrestricted_symbols = []\n"
    )
    code, out = run(["limits", "check", str(path)])
    assert code == 0 and out.rstrip().endswith("valid"), out
    Guard(Limits.from_toml(path))


# ---------------------------------------------------------------- flight-recorder files


def _recorder_file(path: Path, clock: SimClock) -> None:
    """A clean, sealed file a recorder wrote: what it holds is a record's own text."""
    rec = FlightRecorder(None, clock=clock, batch_size=4)
    ctx = AuditContext(node="n1", release_id="[/r]", limits_version="[bold]v1")
    rec.ready()
    rec.record_event("kill", ctx, actor="ops", reason="[/x] stop [red]now")
    order = Order("o[/1]", "s1", "[/AAPL]", Side.BUY, 5, 10.0, None)
    block = Decision(False, RejectReason.MAX_ORDER_QTY, "qty 5 > [/max]")
    rec.record_decision(order, block, ctx, ("armed",))
    rec.record_decision(Order("o2", "s1", "AAPL", Side.BUY, 5, 10.0, None), ACCEPTED, ctx, ())
    rec.record_event("fill", ctx, order_id="o[/1]", qty=5, price="[/p]", venue="[/v]")
    rec.close()
    path.write_bytes(b"".join(line + b"\n" for line in rec.lines))


@pytest.mark.parametrize("ts", [10**21, -(10**21)])
def test_tail_and_why_show_records_whatever_time_and_text_they_hold(
    ts: int, tmp_path: Path
) -> None:
    """A time no calendar holds (a clock set wrong, an edited file) and text that looks like
    console markup (a kill reason "[/x]") are shown, not a traceback."""
    path = tmp_path / "n1.jsonl"
    _recorder_file(path, SimClock(ts))
    code, out = run(["audit", "verify", str(path)])
    assert code == 0 and "INTACT" in out, out  # written by a recorder: nothing was edited
    code, out = run(["audit", "tail", str(path)])
    assert code == 0, out
    assert "[/x] stop [red]now" in out and "out of range" in out, out
    assert "o[/1] buy 5 [/AAPL]: blocked max_order_qty" in out, out
    code, out = run(["audit", "why", "o[/1]", str(path)])
    assert code == 0, out
    for shown in (
        "qty 5 > [/max]",
        "[/AAPL]",
        "[/r]",
        "[bold]v1",
        "[/p]",
        "venue=[/v]",
        "out of range",
    ):
        assert shown in out, (shown, out)


def test_verify_names_a_file_whose_name_looks_like_markup(tmp_path: Path) -> None:
    (tmp_path / "[").mkdir()
    path = tmp_path / "[" / "n1].jsonl"  # the path reads ".../[/n1].jsonl"
    _recorder_file(path, SimClock(10**18))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:-5])  # the last line cut short
    code, out = run(["audit", "verify", str(path)])
    assert code == 1 and "TAMPERED" in out and "[/n1].jsonl" in out, out
    code, out = run(["audit", "tail", str(tmp_path / "[" / "missing].jsonl")])
    assert code == 2 and "cannot read" in out and "[/missing].jsonl" in out, out


# ---------------------------------------------------------------- roster proposals


def test_show_reads_a_proposal_whose_times_no_calendar_holds(
    tmp_path: Path, nats_server: Site
) -> None:
    """A proposal is a file anyone can hand an admin to read: a member valid until the
    year 33,000 is shown as out of range, and the admin can still read who signed it."""
    members = list(KIT.roster.members)
    members[0] = msgspec.structs.replace(members[0], valid_until_ns=10**22)
    members[1] = msgspec.structs.replace(members[1], valid_from_ns=-(10**22))
    proposal = Roster(
        version=KIT.roster.version + 1,
        issued_ns=KIT.roster.issued_ns + 1,
        members=tuple(members),
        admin_threshold=KIT.roster.admin_threshold,
    )
    path = tmp_path / "proposal.json"
    envelope = sign_roster(roster_envelope(proposal), KIT.signer("admin1").key)
    path.write_bytes(encode_envelope(envelope))
    code, out = run(["identity", "show", "--proposal", str(path)], env=nats_server.cli_env("alice"))
    assert code == 0, out
    assert "PROPOSED roster version" in out and "signed by admin1" in out, out
    assert out.count("? (out of range)") == 2, out


def test_limits_check_shows_a_file_whose_strings_look_like_markup(tmp_path: Path) -> None:
    """A version, a symbol or a file name like "[/x]" is shown as written, not read as
    console markup (a valid file's check ended with a traceback)."""
    (tmp_path / "[").mkdir()
    path = tmp_path / "[" / "desk].toml"
    path.write_text(
        'version = "[/v1]"\n[fleet]\nallowed_symbols = ["[/AAPL]"]\n'
        '[symbol."[/AAPL]"]\nmax_order_qty = 5\n'
    )
    code, out = run(["limits", "check", str(path)])
    assert code == 0 and out.rstrip().endswith("valid"), out
    joined = "".join(out.split())  # the table's title wraps
    assert "[/desk].toml(version[/v1])" in joined and "symbol.[/AAPL]:" in out, out
    assert "['[/AAPL]']" in out, out
    path.write_text('version = "[/v1]"\n[fleet]\nmax_loss = -1.0\n')
    code, out = run(["limits", "check", str(path)])
    assert code == 1 and f"{path}: invalid" in out and "fleet.max_loss: must be > 0" in out, out


@pytest.mark.parametrize("valid", [True, False])
def test_limits_check_escapes_control_characters_in_the_files_name(
    tmp_path: Path, valid: bool
) -> None:
    """A file name is the operator's text (a glob, a colleague's share), not the program's:
    an escape sequence in it must not clear or recolour the screen, a carriage return must
    not overwrite "invalid", in the table's title, the refusal or a problem naming it."""
    path = tmp_path / "desk\x1b[2J\rok.toml"
    path.write_text('version = "v1"\n' if valid else 'version = "v1"\n[fleet]\nmax_loss = -1.0\n')
    code, out = run(["limits", "check", str(path)])
    assert code == (0 if valid else 1), out
    assert "\x1b" not in out and "\r" not in out, repr(out)
    assert "desk\\x1b[2J\\rok.toml" in "".join(out.split()), out
    code, out = run(["limits", "check", str(tmp_path / "gone\x1b]0;x\x07.toml")])
    assert code == 1 and "gone\\x1b]0;x\\x07.toml: no such file" in out, out
    assert "\x1b" not in out and "\x07" not in out, repr(out)
