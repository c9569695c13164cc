"""The FIX engine behind the gateway: QuickFIX, loaded on demand, and callbacks that never raise.

QuickFIX is an optional extra (`knightwatch[fix]`): it ships as source only and
takes minutes to build, so nothing outside the gateway imports it, and a
missing engine is one clear error naming the install command, never an
ImportError traceback and never a silently skipped feature.

Why every callback is wrapped: QuickFIX's Python binding ends the whole
process (`Py_Exit(1)`) when a callback raises anything other than the few
session exceptions it knows. A gateway that dies takes every client session
and the kill path with it, so each callback body runs inside `guarded`, which
turns the unexpected into a recorded error and lets the caller fail closed
(reject the message) instead.
"""

from __future__ import annotations

import importlib
import logging
import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from knightwatch.errors import KnightwatchError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'knightwatch[fix]' (QuickFIX 1.16 builds from source on first install: "
    "about 7.5 CPU-minutes and 2.8 GB of memory; pip caches the wheel afterwards)"
)

_fix: ModuleType | None = None


class GatewayError(KnightwatchError, RuntimeError):
    """The gateway cannot start or carry on as configured; the message names what to fix."""


class FixEngineMissing(GatewayError, ImportError):
    """QuickFIX is not installed: the FIX gateway and venue cannot run without it."""


def fix() -> Any:
    """The `quickfix` module, imported once; FixEngineMissing with the install command if absent."""
    global _fix
    if _fix is None:
        try:
            _fix = importlib.import_module("quickfix")
        except ImportError as exc:
            raise FixEngineMissing(
                f"the FIX engine (quickfix) is not installed ({exc}); {INSTALL_HINT}"
            ) from None
    return _fix


def spec_path(begin_string: str) -> Path:
    """The QuickFIX data dictionary for a BeginString, as installed by the `quickfix` wheel."""
    name = {"FIX.4.2": "FIX42.xml", "FIX.4.4": "FIX44.xml"}.get(begin_string)
    if name is None:
        raise GatewayError(f"BeginString: must be FIX.4.2 or FIX.4.4 (got {begin_string!r})")
    fix()
    roots = [Path(sysconfig.get_path("data")), Path(sys.prefix), Path(sys.base_prefix)]
    for root in roots:
        path = root / "share" / "quickfix" / name
        if path.is_file():
            return path
    raise FixEngineMissing(
        f"the QuickFIX data dictionary {name} is not under share/quickfix of "
        f"{', '.join(str(r) for r in roots)}; reinstall: {INSTALL_HINT}"
    )


class CallbackErrors:
    """Errors caught inside engine callbacks: counted, kept (the last few) and logged."""

    def __init__(self, keep: int = 32) -> None:
        self.count = 0
        self.last: list[str] = []
        self._keep = keep

    def add(self, where: str, exc: BaseException) -> str:
        self.count += 1
        text = f"{where}: {type(exc).__name__}: {exc}"
        self.last.append(text)
        del self.last[: -self._keep]
        log.error(
            "FIX_CALLBACK_ERROR %s\n%s",
            text,
            "".join(traceback.format_exception(exc)),
        )
        return text


def guarded(
    errors: CallbackErrors,
    where: str,
    body: Callable[[], None],
    on_error: Callable[[str], None] | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
) -> None:
    """Run a callback body; anything unexpected is recorded and handed to `on_error`.

    `passthrough` lists the engine's own exceptions that must reach QuickFIX
    (e.g. DoNotSend from toApp, RejectLogon from fromAdmin). `on_error` itself
    is guarded too: a failing error path is recorded, never raised.
    """
    try:
        body()
    except passthrough:
        raise
    except BaseException as exc:  # the engine would end the process: contain everything
        text = errors.add(where, exc)
        if on_error is not None:
            try:
                on_error(text)
            except BaseException as again:
                errors.add(f"{where} (error path)", again)


class Handler:
    """What a QuickFIX application does, in plain methods; `application` wraps each one.

    Subclasses override what they need. `errors` collects what the guard caught,
    and `on_error` (message callbacks only) is the fail-closed path: the
    gateway answers the message with a reject there.
    """

    def __init__(self) -> None:
        self.errors = CallbackErrors()

    def on_create(self, sid: Any) -> None:
        pass

    def on_logon(self, sid: Any) -> None:
        pass

    def on_logout(self, sid: Any) -> None:
        pass

    def to_admin(self, msg: Any, sid: Any) -> None:
        pass

    def from_admin(self, msg: Any, sid: Any) -> None:
        pass

    def to_app(self, msg: Any, sid: Any) -> None:
        """Called only for messages the engine resends (PossDupFlag=Y): the one place a
        handler may stop a message (raise DoNotSend; it is gap-filled instead)."""

    def from_app(self, msg: Any, sid: Any) -> None:
        pass

    def on_error(self, where: str, text: str, msg: Any, sid: Any) -> None:
        pass


_app_class: type | None = None


def application(handler: Handler) -> Any:
    """A `quickfix.Application` whose every callback runs guarded (see module docstring)."""
    global _app_class
    if _app_class is None:
        _app_class = _build_app_class()
    return _app_class(handler)


def _build_app_class() -> type:
    q = fix()
    from_app_ok = (
        q.FieldNotFound,
        q.IncorrectDataFormat,
        q.IncorrectTagValue,
        q.UnsupportedMessageType,
    )
    from_admin_ok = (q.FieldNotFound, q.IncorrectDataFormat, q.IncorrectTagValue, q.RejectLogon)
    to_app_ok = (q.DoNotSend,)
    base: Any = q.Application

    class SafeApplication(base):  # type: ignore[misc]
        def __init__(self, handler: Handler) -> None:
            super().__init__()
            self.h = handler

        def onCreate(self, sid: Any) -> None:
            guarded(self.h.errors, "onCreate", lambda: self.h.on_create(sid))

        def onLogon(self, sid: Any) -> None:
            guarded(self.h.errors, "onLogon", lambda: self.h.on_logon(sid))

        def onLogout(self, sid: Any) -> None:
            guarded(self.h.errors, "onLogout", lambda: self.h.on_logout(sid))

        def toAdmin(self, msg: Any, sid: Any) -> None:
            guarded(self.h.errors, "toAdmin", lambda: self.h.to_admin(msg, sid))

        def fromAdmin(self, msg: Any, sid: Any) -> None:
            guarded(
                self.h.errors,
                "fromAdmin",
                lambda: self.h.from_admin(msg, sid),
                passthrough=from_admin_ok,
            )

        def toApp(self, msg: Any, sid: Any) -> None:
            # called for every message sent: only a resend (PossDupFlag) goes to the handler
            try:
                resend = msg.getHeader().isSetField(43)
            except BaseException as exc:
                self.h.errors.add("toApp", exc)
                return
            if resend:
                guarded(
                    self.h.errors, "toApp", lambda: self.h.to_app(msg, sid), passthrough=to_app_ok
                )

        def fromApp(self, msg: Any, sid: Any) -> None:
            guarded(
                self.h.errors,
                "fromApp",
                lambda: self.h.from_app(msg, sid),
                lambda text: self.h.on_error("fromApp", text, msg, sid),
                passthrough=from_app_ok,
            )

    return SafeApplication


def settings(text: str) -> Any:
    """QuickFIX SessionSettings from settings text; a bad one is a GatewayError, not a crash."""
    q = fix()
    s = q.SessionSettings()
    try:
        s.setFromString(text)
    except q.ConfigError as exc:
        raise GatewayError(f"QuickFIX settings: {exc}") from None
    return s


def store_factory(kind: str, s: Any) -> Any:
    q = fix()
    return q.FileStoreFactory(s) if kind == "file" else q.MemoryStoreFactory()


def log_factory(enabled: bool, s: Any) -> Any:
    return fix().FileLogFactory(s) if enabled else None
