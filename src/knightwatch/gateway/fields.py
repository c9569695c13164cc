"""FIX tags, values and small builders shared by the gateway, the venue and the client.

Raw tag numbers rather than QuickFIX's generated field classes: one generic
`setField(tag, str)` / `getField(tag)` per field is the cheapest path through
the binding, and it reads the same under FIX 4.2 and 4.4. The differences
between the two versions that matter here (ExecTransType, ExecType 1/2 for
fills, no mass cancel or mass status in 4.2) are handled by `ExecKind`.
"""

from __future__ import annotations

import hashlib
import time
from enum import StrEnum
from typing import Any

from knightwatch.gateway.engine import fix

SOH = "\x01"

# --- tags ---------------------------------------------------------------------
ACCOUNT = 1
AVG_PX = 6
BEGIN_STRING = 8
CL_ORD_ID = 11
CUM_QTY = 14
EXEC_ID = 17
EXEC_INST = 18
EXEC_REF_ID = 19
EXEC_TRANS_TYPE = 20
HANDL_INST = 21
ID_SOURCE = 22
LAST_PX = 31
LAST_QTY = 32
MSG_SEQ_NUM = 34
MSG_TYPE = 35
ORDER_ID = 37
ORDER_QTY = 38
ORD_STATUS = 39
ORD_TYPE = 40
ORIG_CL_ORD_ID = 41
POSS_DUP = 43
REF_SEQ_NUM = 45
PRICE = 44
CASH_ORDER_QTY = 152
SECURITY_ID = 48
SENDER_COMP_ID = 49
SENDER_SUB_ID = 50
SIDE = 54
SYMBOL = 55
TARGET_COMP_ID = 56
TEXT = 58
TIME_IN_FORCE = 59
TRANSACT_TIME = 60
TRADE_DATE = 75
POSS_RESEND = 97
STOP_PX = 99
CXL_REJ_REASON = 102
ORD_REJ_REASON = 103
ON_BEHALF_OF = 115
ORIG_SENDING_TIME = 122
DELIVER_TO = 128
EXEC_TYPE = 150
LEAVES_QTY = 151
MD_REQ_ID = 262
SUBSCRIPTION_TYPE = 263
MARKET_DEPTH = 264
NO_MD_ENTRY_TYPES = 267
NO_MD_ENTRIES = 268
MD_ENTRY_TYPE = 269
MD_ENTRY_PX = 270
NO_RELATED_SYM = 146
REF_MSG_TYPE = 372
NEW_SEQ_NO = 36
GAP_FILL_FLAG = 123
RESET_SEQ_NUM_FLAG = 141
SESSION_REJECT_REASON = 373
BUSINESS_REJECT_REF_ID = 379
BUSINESS_REJECT_REASON = 380
CXL_REJ_RESPONSE_TO = 434
TRADE_REPORT_TRANS_TYPE = 487
MASS_CANCEL_REQUEST_TYPE = 530
MASS_CANCEL_RESPONSE = 531
TOTAL_AFFECTED = 533
NO_SIDES = 552
PREVIOUSLY_REPORTED = 570
TRADE_REPORT_ID = 571
TRADE_REPORT_REF_ID = 572
MASS_STATUS_REQ_ID = 584
MASS_STATUS_REQ_TYPE = 585
TOT_NUM_REPORTS = 911
LAST_RPT_REQUESTED = 912
TRD_TYPE = 828
TRADE_REPORT_TYPE = 856

# --- message types ------------------------------------------------------------
NEW_ORDER = "D"
CANCEL = "F"
REPLACE = "G"
STATUS_REQUEST = "H"
MASS_CANCEL = "q"
MASS_CANCEL_REPORT = "r"
MASS_STATUS = "AF"
EXECUTION_REPORT = "8"
CANCEL_REJECT = "9"
BUSINESS_REJECT = "j"
SESSION_REJECT = "3"
LOGON = "A"
SEQUENCE_RESET = "4"
TRADE_CAPTURE_REPORT = "AE"
MD_REQUEST = "V"
MD_SNAPSHOT = "W"

# Header fields a forwarded message must not carry over: QuickFIX fills Begin,
# Sender, Target, MsgSeqNum and SendingTime itself; these would misroute it or
# make the venue treat a fresh message as a duplicate.
STRIP_ON_FORWARD = (POSS_DUP, POSS_RESEND, ORIG_SENDING_TIME, ON_BEHALF_OF, DELIVER_TO, 116, 129)

# OrdRejReason values valid in both FIX 4.2 and 4.4
REJ_BROKER_OPTION = "0"
REJ_UNKNOWN_SYMBOL = "1"
REJ_EXCHANGE_CLOSED = "2"
REJ_EXCEEDS_LIMIT = "3"
REJ_UNKNOWN_ORDER = "5"
REJ_DUPLICATE = "6"

# CxlRejReason
CXL_TOO_LATE = "0"
CXL_UNKNOWN_ORDER = "1"
CXL_BROKER_OPTION = "2"
CXL_PENDING = "3"

# BusinessRejectReason
BIZ_OTHER = "0"
BIZ_UNSUPPORTED_TYPE = "3"


class ExecKind(StrEnum):
    """What an ExecutionReport means, the same for FIX 4.2 and 4.4."""

    NEW = "new"
    PENDING = "pending"
    TRADE = "trade"
    CANCELED = "canceled"
    EXPIRED = "expired"
    DONE_FOR_DAY = "done_for_day"
    REJECTED = "rejected"
    REPLACED = "replaced"
    RESTATED = "restated"
    TRADE_CANCEL = "trade_cancel"
    TRADE_CORRECT = "trade_correct"
    STATUS = "status"
    OTHER = "other"


_EXEC_TYPE_44 = {
    "0": ExecKind.NEW,
    "A": ExecKind.PENDING,
    "6": ExecKind.PENDING,
    "E": ExecKind.PENDING,
    "F": ExecKind.TRADE,
    "4": ExecKind.CANCELED,
    "C": ExecKind.EXPIRED,
    "3": ExecKind.DONE_FOR_DAY,
    "8": ExecKind.REJECTED,
    "5": ExecKind.REPLACED,
    "D": ExecKind.RESTATED,
    "H": ExecKind.TRADE_CANCEL,
    "G": ExecKind.TRADE_CORRECT,
    "I": ExecKind.STATUS,
}
_EXEC_TYPE_42 = {**_EXEC_TYPE_44, "1": ExecKind.TRADE, "2": ExecKind.TRADE}
_TRANS_42 = {"1": ExecKind.TRADE_CANCEL, "2": ExecKind.TRADE_CORRECT, "3": ExecKind.STATUS}


def exec_kind(m: In, fix42: bool) -> ExecKind:
    """Normalise ExecType (and FIX 4.2's ExecTransType) to one meaning."""
    exec_type = m.f.get(EXEC_TYPE, "")
    if fix42:
        trans = _TRANS_42.get(m.f.get(EXEC_TRANS_TYPE, ""))
        if trans is not None:
            return trans
        return _EXEC_TYPE_42.get(exec_type, ExecKind.OTHER)
    return _EXEC_TYPE_44.get(exec_type, ExecKind.OTHER)


class In:
    """A received message read once: its raw text and its fields by tag.

    One engine call (`toString`) instead of one per field: through the binding each
    call costs a few microseconds, and a gateway reads a dozen fields per message.
    Repeating groups are not resolved (the last instance of a tag wins); the few
    group readers use the engine's group API on `msg`.
    """

    __slots__ = ("f", "msg", "mtype", "raw")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.raw: str = msg.toString()
        f: dict[int, str] = {}
        for part in self.raw.split("\x01"):
            tag, _, value = part.partition("=")
            if tag.isdigit():
                f[int(tag)] = value
        self.f = f
        self.mtype = f.get(MSG_TYPE, "")

    def get(self, tag: int) -> str | None:
        return self.f.get(tag)

    def __getitem__(self, tag: int) -> str:
        try:
            return self.f[tag]
        except KeyError:
            raise fix().FieldNotFound(tag) from None

    def __contains__(self, tag: int) -> bool:
        return tag in self.f

    @property
    def seq(self) -> int:
        return int(self.f.get(MSG_SEQ_NUM, "0"))

    @property
    def resent(self) -> bool:
        """PossDupFlag or PossResend: a message sent before, maybe already acted on."""
        return self.f.get(POSS_DUP) == "Y" or self.f.get(POSS_RESEND) == "Y"


def opt(msg: Any, tag: int) -> str | None:
    """An optional body field of an engine message, or None."""
    return msg.getField(tag) if msg.isSetField(tag) else None


def hdr(msg: Any, tag: int) -> str | None:
    h = msg.getHeader()
    return h.getField(tag) if h.isSetField(tag) else None


def msg_type(msg: Any) -> str:
    return str(msg.getHeader().getField(MSG_TYPE))


def message(mtype: str, fields: list[tuple[int, str]]) -> Any:
    """A new application message (no repeating groups), built from text in one engine call.

    QuickFIX sets BeginString, the CompIDs, MsgSeqNum, SendingTime, BodyLength and
    CheckSum when the message is sent; a value can never carry the field separator.
    A tag given twice is an error (the receiver would reject the message).
    """
    if len({tag for tag, _ in fields}) != len(fields):
        raise ValueError(f"message {mtype}: a tag is given twice in {fields}")
    body = "".join(
        f"{tag}={clean(str(value)).replace(SOH, ' ') or '?'}{SOH}" for tag, value in fields
    )
    return fix().Message(f"8=FIX.4.4{SOH}9=0{SOH}35={mtype}{SOH}{body}10=000{SOH}", False)


def now_utc() -> str:
    """A FIX UTCTimestamp (milliseconds) for TransactTime."""
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def clean(value: str) -> str:
    """Text that can be sent and recorded: bytes that were not UTF-8 (held as lone
    surrogates when the engine decoded them) become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def undecodable(m: In) -> int | None:
    """The first tag of a received message whose value is not UTF-8, if any."""
    if m.raw.isascii():
        return None
    for tag, value in m.f.items():
        if clean(value) != value:
            return tag
    return None


def forward_copy(m: In) -> Any:
    """The message as it goes on to the other side: the same body, a clean header."""
    out = fix().Message(m.msg)
    strip = [tag for tag in STRIP_ON_FORWARD if tag in m.f]
    if strip:
        h = out.getHeader()
        for tag in strip:
            h.removeField(tag)
    return out


def raw_hash(m: In) -> str:
    """sha256 of the message as received, for the flight recorder (first 32 hex digits)."""
    return hashlib.sha256(m.raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def own_sid(sid: Any) -> Any:
    """A copy of a callback's SessionID: the engine's object may not outlive its session."""
    return fix().SessionID(
        sid.getBeginString().getValue(),
        sid.getSenderCompID().getValue(),
        sid.getTargetCompID().getValue(),
    )


def session_key(sid: Any) -> str:
    return str(sid.toString())


def target_of(sid: Any) -> str:
    return str(sid.getTargetCompID().getValue())


def send(msg: Any, sid: Any) -> bool:
    """Send on a session; False (never an exception) if the session is unknown or refuses."""
    try:
        return bool(fix().Session.sendToTarget(msg, sid))
    except (fix().SessionNotFound, RuntimeError):  # unknown, or an engine shutting down
        return False
