"""Trust in the control plane: who may change trading state, proven where it is applied.

- `roster`: people and components, their keys and roles, signed by a
  threshold of admins; `store`: a process's verified view of it;
- `identity`: a signer (name + Ed25519 key), also its NATS login;
- `command`: signed kill-switch commands and the check every reader runs;
- `flagproof`: signed flag changes (with their approval) and the check every
  node runs before applying a flag revision;
- `kit`: a whole cast provisioned at once (local fleets, the replay, tests).

The keys, envelopes and threshold policies are the release layer's; nothing
here is new cryptography.
"""

from knightwatch.trust.command import (
    Checked,
    Refused,
    StateCommand,
    TrustReason,
    check_state,
    sign_command,
)
from knightwatch.trust.identity import Signer, load_signer, nkey_public
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import ApprovalPolicy, Member, Role, Roster, TrustError
from knightwatch.trust.store import TrustStore

__all__ = [
    "ApprovalPolicy",
    "Checked",
    "Kit",
    "Member",
    "Refused",
    "Role",
    "Roster",
    "Signer",
    "StateCommand",
    "TrustError",
    "TrustReason",
    "TrustStore",
    "check_state",
    "load_signer",
    "nkey_public",
    "sign_command",
]
