"""`knightwatch audit verify|why|tail` through the real typer app."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.audit import FlightRecorder
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.order import Order, Side

from ..audit.conftest import WriteFile
from ..audit.helpers import BLOCK, CTX, RULES, order

runner = CliRunner()


def test_verify_intact_exits_0(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(12)
    result = runner.invoke(app, ["audit", "verify", str(audit_path)])
    assert result.exit_code == 0, result.output
    assert "INTACT" in result.output and f"{len(lines) - 2} records, 2 seals" in result.output


def test_verify_tampered_exits_1_and_names_the_line(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file(12)
    lines[3] = lines[3].replace(b'"qty":100', b'"qty":1000')
    audit_path.write_bytes(b"".join(lines))
    result = runner.invoke(app, ["audit", "verify", str(audit_path)])
    assert result.exit_code == 1
    assert "TAMPERED" in result.output and "edited" in result.output


def test_verify_json_output(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(5)
    del lines[2]
    audit_path.write_bytes(b"".join(lines))
    result = runner.invoke(app, ["audit", "verify", str(audit_path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [(p["kind"], p["line"]) for p in report["problems"]] == [("deleted", 3), ("edited", 6)]


def test_verify_unreadable_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "cannot read" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["audit", "verify", str(tmp_path)])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_verify_bad_anchor_is_named(write_file: WriteFile, audit_path: Path) -> None:
    write_file(3)
    result = runner.invoke(app, ["audit", "verify", str(audit_path), "--anchor", "xyz"])
    assert result.exit_code == 2 and "--anchor" in result.output


def test_verify_anchor_catches_a_cut_tail(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(8)
    head = json.loads(lines[-1])["hash"]
    audit_path.write_bytes(b"".join(lines[:-2]))
    result = runner.invoke(app, ["audit", "verify", str(audit_path), "--anchor", head])
    assert result.exit_code == 1 and "anchor_missing" in result.output


def test_why_prints_the_reasons(write_file: WriteFile, audit_path: Path) -> None:
    write_file(10)
    result = runner.invoke(app, ["audit", "why", "o4", str(audit_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        "BLOCKED",
        "max_order_qty",
        "qty 50000 > max_order_qty",
        "n1",
        "rel-7",
        "snap-3",
        "v2",
        "trading_state, armed, validity, max_order_qty",
        "2012-08-01T13:40:00",
        "fills: none recorded",
    ):
        assert expected in out, expected
    accepted = runner.invoke(app, ["audit", "why", "o7", str(audit_path)])
    assert accepted.exit_code == 0 and "ACCEPTED" in accepted.output
    assert "fills" in accepted.output and "101" in accepted.output


def test_why_unknown_order_exits_1(write_file: WriteFile, audit_path: Path) -> None:
    write_file(3)
    result = runner.invoke(app, ["audit", "why", "ghost", str(audit_path)])
    assert result.exit_code == 1 and "no decision recorded" in result.output


def test_why_unreadable_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "why", "o1", str(tmp_path / "none")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_tail_shows_the_last_records(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(10)
    result = runner.invoke(app, ["audit", "tail", str(audit_path), "-n", "3"])
    assert result.exit_code == 0, result.output
    last_seq = len(lines) - 1
    assert str(last_seq) in result.output and str(last_seq - 2) in result.output
    bad = runner.invoke(app, ["audit", "tail", str(audit_path), "-n", "0"])
    assert bad.exit_code == 2


def test_tail_names_an_over_long_last_line_and_still_shows_the_records_before(
    write_file: WriteFile, audit_path: Path
) -> None:
    """A last line longer than any record (a torn or hostile write) showed "last 0
    records": the records before it were lost with it."""
    lines = write_file(5)
    with open(audit_path, "ab") as f:
        f.write(b'{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}\n')
    result = runner.invoke(app, ["audit", "tail", str(audit_path), "-n", "3"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "last 3 records" in out and "unreadable" in out and "line longer than" in out
    assert str(len(lines) - 1) in result.output  # the record before it is still shown


def test_verify_empty_file_is_not_a_clean_bill(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["audit", "verify", str(empty)])
    assert result.exit_code == 1
    assert "no records" in result.output


def test_verify_a_crashed_file_says_unsealed(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(12)
    audit_path.write_bytes(b"".join(lines[:-1]) + b"\0" * 1000)
    result = runner.invoke(app, ["audit", "verify", str(audit_path)])
    assert result.exit_code == 1
    assert "unsealed" in result.output and "not sealed yet" in result.output


def test_why_names_the_covering_seal(write_file: WriteFile, audit_path: Path) -> None:
    write_file(10)
    result = runner.invoke(app, ["audit", "why", "o4", str(audit_path)])
    assert result.exit_code == 0, result.output
    assert "sealed by seq 8" in result.output


def test_tail_shows_seals(write_file: WriteFile, audit_path: Path) -> None:
    write_file(10)
    result = runner.invoke(app, ["audit", "tail", str(audit_path), "-n", "3"])
    assert result.exit_code == 0, result.output
    assert "seal" in result.output and "record(s) sealed" in result.output


def test_verify_fails_on_a_checkpoints_file_that_cannot_be_decoded(
    write_file: WriteFile, audit_path: Path
) -> None:
    """Given or found beside FILE, undecodable checkpoints are no evidence: exit 1, named."""
    write_file(6)
    garbage = audit_path.with_name("random.bin")
    garbage.write_bytes(bytes(range(256)) * 8)
    for args, named in (
        (["--checkpoints", str(garbage)], garbage),
        ([], audit_path.with_name(audit_path.name + ".checkpoints")),
    ):
        if not args:
            named.write_bytes(b"\x00\xffnot an envelope\n{}\n")
        result = runner.invoke(app, ["audit", "verify", str(audit_path), "--json", *args])
        assert result.exit_code == 1, result.output
        report = json.loads(result.stdout)
        [problem] = report["problems"]
        assert problem["kind"] == "checkpoint_invalid"
        assert problem["detail"].startswith(f"checkpoints {named}: ")
        assert "cannot be decoded as signed checkpoints" in problem["detail"]


@pytest.mark.parametrize("node", ["", "  ", " n1", "n1\n"])
def test_verify_an_empty_or_padded_node_is_named_not_replaced(
    write_file: WriteFile, audit_path: Path, node: str
) -> None:
    """`--node "$NODE"` with NODE unset was taken as no --node: the file's first record's
    node was used instead of the one asked for."""
    write_file()
    result = runner.invoke(app, ["audit", "verify", str(audit_path), "--node", node])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "--node:" in out and ("empty value" in out or "whitespace" in out), out
    assert "Traceback" not in result.output


def test_verify_why_and_tail_of_a_sparse_file_read_its_data_not_its_hole(
    write_file: WriteFile, audit_path: Path
) -> None:
    """`audit verify` and `audit why` read a file cut to 64 GiB (sparse: nothing on disk)
    through all of its zeros; the hole is skipped, as `verify_file` skips it (`rchar` of
    /proc/self/io: the bytes this process read)."""
    lines = write_file(12)
    os.truncate(audit_path, 64 * 1024**3)
    before = _read_so_far()
    verified = runner.invoke(app, ["audit", "verify", str(audit_path)])
    assert verified.exit_code == 0, verified.output
    assert f"{len(lines) - 2} records, 2 seals" in verified.output
    why = runner.invoke(app, ["audit", "why", "o4", str(audit_path)])
    assert why.exit_code == 0 and "BLOCKED" in why.output and "chain verified" in why.output
    tail = runner.invoke(app, ["audit", "tail", str(audit_path), "-n", "1"])
    assert tail.exit_code == 0 and "seal" in tail.output
    assert _read_so_far() - before < 64 * 1024 * 1024  # far less than the hole


def test_verify_names_a_crashed_files_torn_last_line_as_verify_file_does(
    write_file: WriteFile, audit_path: Path
) -> None:
    """A crash leaves a torn last line before the 64 MiB a recorder allocates ahead in
    zeros: `audit verify` read them with it and called it a malformed line "longer than
    1048576 bytes", where `verify_file` says the last line was cut short."""
    lines = write_file(12)
    torn = b"".join(lines) + lines[3][:40]
    audit_path.write_bytes(torn)
    os.truncate(audit_path, len(torn) + 64 * 1024 * 1024)
    result = runner.invoke(app, ["audit", "verify", str(audit_path), "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert [(p["kind"], p["line"]) for p in problems] == [("truncated", len(lines) + 1)]
    assert "cut short" in problems[0]["detail"]


def _read_so_far() -> int:
    """Bytes this process has read through read(2)-like calls (/proc/self/io `rchar`)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_verify_json_of_a_file_whose_name_is_not_utf8_names_it(
    write_file: WriteFile, audit_path: Path
) -> None:
    """A file name that is not UTF-8 (its bytes kept as surrogates) ended `audit verify
    --json` with a UnicodeEncodeError traceback; it is named, its odd byte escaped."""
    lines = write_file(5)
    odd = audit_path.with_name(os.fsdecode(b"n1-\xff.jsonl"))
    odd.write_bytes(b"".join(lines))
    result = runner.invoke(app, ["audit", "verify", str(odd), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["path"].endswith("n1-\\xff.jsonl") and report["problems"] == []
    tail = runner.invoke(app, ["audit", "tail", str(odd), "-n", "1"])
    assert tail.exit_code == 0 and "n1-\\xff.jsonl" in " ".join(tail.output.split())


def test_why_of_an_order_id_that_looks_like_markup_says_it_is_not_found(
    write_file: WriteFile, audit_path: Path
) -> None:
    """`audit why '[/x]' FILE` ended with a rich MarkupError traceback: the not-found message
    quotes the id and was printed as markup."""
    write_file(3)
    result = runner.invoke(app, ["audit", "why", "[/x]", str(audit_path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "order '[/x]': no decision recorded" in " ".join(result.output.split())


def test_why_of_a_reused_id_shows_every_decision_counted_with_its_line(
    audit_path: Path, clock: SimClock
) -> None:
    """`audit why n1-1` for an id decided twice (a restart numbered its children from 1
    again: the Guard blocked the second `duplicate_order_id`) printed two panels both titled
    `order n1-1`, the accepted one first, and never said there were two: "why was n1-1
    blocked?" read "ACCEPTED". It says how many, which is the latest, and each one's line."""
    o = Order("n1-1", "smars", "AAPL", Side.BUY, 100, 101.25, "p1")
    dup = Decision(False, RejectReason.DUPLICATE_ORDER_ID, "order id n1-1 already seen")
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_decision(o, ACCEPTED, CTX, RULES)
        rec.record_decision(order(2), ACCEPTED, CTX, RULES)
        rec.record_decision(o, dup, CTX, ("validity",))
    result = runner.invoke(app, ["audit", "why", "n1-1", str(audit_path)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "2 decisions recorded for order n1-1" in out
    assert "the latest (seq 2): BLOCKED duplicate_order_id" in out
    assert "decision 1 of 2" in out and "decision 2 of 2" in out
    assert "line 1, seq 0" in out and "line 3, seq 2" in out
    assert out.index("ACCEPTED") < out.index("decision 2 of 2") < out.rindex("BLOCKED")


@pytest.mark.parametrize(
    "control",
    ["\x1b[1A\x1b[2K", "\x1b]0;title\x07", "\r", "\x9b2J", "\u202e", "\x00", "\x7f"],
    ids=["csi", "osc", "cr", "c1", "bidi", "nul", "del"],
)
def test_why_and_tail_never_write_a_records_control_characters_to_the_terminal(
    audit_path: Path, control: str
) -> None:
    """A record holds what an order or a message carried (an unvalidated order's fields
    are recorded as they came): an ESC sequence in a strategy, an order id or a fill's
    field was printed raw, and could move the cursor up and rewrite the verdict shown.
    Every control character from the file is shown as its escape instead."""
    from types import SimpleNamespace

    clock = SimClock(1_343_828_400_000_000_000)
    oid = f"o{control}1"
    sent = SimpleNamespace(
        id=oid, strategy=f"s{control}", symbol="AAPL", side="buy", qty=1, price=1.0, parent_id=None
    )
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_event(
            "halt", CTX, scope="fleet", key="fleet", state="HALTED", code="halted",
            reason=f"r{control}", actor="ops",
        )  # fmt: skip
        rec.record_decision(sent, BLOCK, CTX, RULES)
        rec.record_event("fill", CTX, order_id=oid, qty=1, price=1.0, venue=f"v{control}")
    audit_path.write_bytes(audit_path.read_bytes() + b'{"seq":\x1b[2J\n')  # undecodable
    shown = repr(control)[1:-1]
    why = runner.invoke(app, ["audit", "why", oid, str(audit_path)])
    tail = runner.invoke(app, ["audit", "tail", str(audit_path)])
    for result in (why, tail):
        assert not any(c in result.output for c in control if not c.isprintable()), result.output
        assert "Traceback" not in result.output
    # the records used are intact; the line appended after them is a changed file
    assert why.exit_code == 1 and "BLOCKED" in why.output and "chain verified" in why.output
    assert "CHAIN BROKEN after the records used" in " ".join(why.output.split())
    for text in (f"o{shown}1", f"s{shown}", f"venue=v{shown}", f"reason=r{shown}"):
        assert text in " ".join(why.output.split()), why.output
    assert tail.exit_code == 0 and "\\x1b[2J" in tail.output


@pytest.mark.parametrize("cut", [1, 9, 40, -2, -1])
@pytest.mark.parametrize("sealed_before", [True, False])
def test_verify_of_a_file_read_mid_copy_says_its_end_is_unfinished_not_only_faults(
    write_file: WriteFile, audit_path: Path, cut: int, sealed_before: bool
) -> None:
    """A file a recorder is still writing, read mid-copy, ends in a torn line, after
    records not sealed yet or right after a seal: `verify` printed a table of faults
    with no word of what a writer leaves (the note came only for unsealed records
    alone). It still exits 1 (the end is not proven), and says why."""
    lines = write_file(12)
    first_seal = next(i for i, line in enumerate(lines) if b'"kind":"seal"' in line)
    at = first_seal + 1 if sealed_before else len(lines) - 2  # the line being copied
    kept, torn = lines[:at], lines[at][:cut]
    live = b"\0" * 4096  # what a recorder has allocated past the line it copies
    audit_path.write_bytes(b"".join(kept) + torn + live)
    result = runner.invoke(app, ["audit", "verify", str(audit_path)])
    out = " ".join(result.output.split())
    assert result.exit_code == 1, out
    assert "its last line is cut short: a recorder is writing this file, or crashed" in out
    assert sealed_before or "not sealed yet" in out
    # anything else wrong in the file: no such note
    edited = [*kept[:2], kept[2].replace(b'"qty":100', b'"qty":900'), *kept[3:]]
    audit_path.write_bytes(b"".join(edited) + torn + live)
    result = runner.invoke(app, ["audit", "verify", str(audit_path)])
    assert result.exit_code == 1 and "edited" in result.output
    assert "a recorder is writing" not in " ".join(result.output.split())


@pytest.mark.parametrize("cut", [1, 25, -1])
def test_verify_of_a_closed_file_cut_inside_a_line_says_cut_not_a_writer(
    write_file: WriteFile, audit_path: Path, cut: int
) -> None:
    """A file whose last line ends with nothing after it (no zeros a live recorder has
    allocated) was cut after it was written (a copy, a full disk, `truncate`): `verify`
    said a recorder was writing it, which an operator reads as "come back later"."""
    lines = write_file(12)
    kept, torn = lines[:-2], lines[-2][:cut]
    audit_path.write_bytes(b"".join(kept) + torn)
    result = runner.invoke(app, ["audit", "verify", str(audit_path)])
    out = " ".join(result.output.split())
    assert result.exit_code == 1, out
    assert "cut" in out and "a recorder is writing" not in out, out
