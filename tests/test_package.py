"""The public face: the embedding surface imports from `knightwatch` and needs only msgspec."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import knightwatch
from knightwatch import Guard, KnightwatchError, Limits, Order, Scope, Side, TradingState


def test_facade_exports_the_embedding_surface() -> None:
    for name in knightwatch.__all__:
        assert getattr(knightwatch, name) is not None
    assert {"Guard", "Limits", "Order", "Fill", "Side", "Decision", "RejectReason", "Scope"} <= set(
        knightwatch.__all__
    )


def test_docstring_example_runs_as_written() -> None:
    doc = knightwatch.__doc__ or ""
    lines = [ln[4:] for ln in doc.splitlines() if ln.startswith("    ")]
    code = "\n".join(ln.split("#")[0].rstrip() for ln in lines)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:4] == ["True", "ok", "False", "max_order_qty"]


def test_embedding_loads_no_third_party_package_but_msgspec() -> None:
    code = (
        "import sys, knightwatch\n"
        "from knightwatch import Guard\n"
        "extra = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(sorted(m for m in extra if not m.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the compiled build adds its own shared library, named <hash>__mypyc; the engine
    # imports mypy_extensions when it is installed (it marks a class for the compiler)
    loaded = {m for m in ast.literal_eval(out.stdout) if not m.endswith("__mypyc")}
    assert loaded <= {"knightwatch", "msgspec", "typing_extensions", "mypy_extensions"}, loaded


def test_every_error_has_the_one_root() -> None:
    from knightwatch.audit.errors import ChainCorrupt
    from knightwatch.control.plane.protocol import ControlPlaneUnavailable
    from knightwatch.limits import LimitsError
    from knightwatch.order import InvalidOrder

    for cls in (ChainCorrupt, ControlPlaneUnavailable, LimitsError, InvalidOrder):
        assert issubclass(cls, KnightwatchError)
    assert issubclass(LimitsError, ValueError)  # built-in bases kept


def test_halt_and_resume_take_a_scope_string_and_name_a_bad_argument() -> None:
    g = Guard(Limits(), node="n1")
    g.halt("fleet", "ignored", "drill", "alice")
    assert g.trading_state(Scope.FLEET) is TradingState.HALTED
    assert g.resume("fleet", "", "drill over", "alice") is True
    assert g.trading_state("fleet") is TradingState.ACTIVE
    with pytest.raises(ValueError, match="scope must be"):
        g.halt("planet", "x", "r", "a")
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        g.halt(Scope.SYMBOL, None, "r", "a")  # type: ignore[arg-type]
    assert g.halts() == {}
    g.arm("ops")
    g.on_price("IBM", 100.0)
    assert g.check(Order("o1", "rlp", "IBM", Side.BUY, 10, 100.0)).accepted
