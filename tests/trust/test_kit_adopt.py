"""`Kit.adopt`: a restarted local fleet takes the roster versions its admins published on the
server since its files were written, and signs its own next version on top of them.

Before, the kit added its own version of the same number (the server kept the other one,
and the roster in force never held what the kit added); a stored history is now taken in
only when it verifies from the kit's anchor and agrees with the kit's own versions.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from knightwatch.release.keys import SigningKey
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, TrustError


def test_a_published_version_is_taken_and_the_next_is_signed_on_top(tmp_path: Path) -> None:
    kit = Kit(now_ns=10, nodes=["n1"])
    kit.write(tmp_path, private=list(kit.signers))
    restarted = Kit.read(tmp_path)  # the state dir's files
    kit.add("dave", [Role.OPERATOR])  # published by the admins on the server meanwhile
    restarted.adopt(kit.envelopes)
    assert restarted.roster.version == 2 and "dave" in restarted.roster.names_with(Role.OPERATOR)
    restarted.add("n2", [Role.NODE])
    store = restarted.store()  # every version verifies from the anchor, in order
    assert store.roster is not None and store.version == 3
    assert {"dave", "n2"} <= {m.name for m in store.roster.members}
    restarted.adopt(kit.envelopes)  # a history the kit is ahead of: nothing taken
    assert restarted.roster.version == 3


def test_a_version_of_the_kits_own_is_not_replaced(tmp_path: Path) -> None:
    kit = Kit(now_ns=10)
    other = copy.deepcopy(kit)
    kit.add("n2", [Role.NODE])
    other.add("dave", [Role.OPERATOR])
    with pytest.raises(TrustError, match=r"^roster version 2: the store holds another version$"):
        kit.adopt(other.envelopes)
    assert kit.roster.version == 2 and "n2" in kit.roster.names_with(Role.NODE)


def test_a_history_that_does_not_verify_is_not_taken() -> None:
    kit = Kit(now_ns=10)
    forged = copy.deepcopy(kit)  # the same version 1, then one signed by other keys
    for name in forged.admin_names:
        forged.signers[name] = Signer(name, SigningKey.generate())
    forged.add("dave", [Role.ADMIN])
    with pytest.raises(TrustError, match=r"^roster version 2: signed by 0 admin\(s\)"):
        kit.adopt(forged.envelopes)
    assert kit.roster.version == 1 and len(kit.envelopes) == 1


def test_a_version_it_cannot_sign_is_refused_in_one_line(tmp_path: Path) -> None:
    kit = Kit(now_ns=10)
    kit.write(tmp_path, private=["admin1", "alice"])  # admin2's key kept elsewhere
    held = Kit.read(tmp_path)
    with pytest.raises(TrustError, match=r"^roster version 2: 2 admins must sign it, this kit "
                       r"holds the keys of admin1$"):  # fmt: skip
        held.add("n2", [Role.NODE])
    assert held.roster.version == 1 and len(held.envelopes) == 1  # left as it was
