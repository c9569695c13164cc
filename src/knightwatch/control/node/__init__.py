"""The node agent: what runs inside every order-emitting process, beside its Guard.

`NodeRuntime` holds the node's lease (renewed by heartbeats, lost at once on a
disconnect, so a node cut off from the plane blocks through its own Guard),
applies kills the moment they arrive and stores the Guard's automatic halts;
the `Attestor` proves at join what code the node runs; `NodeFlags` applies and
confirms flag state; `ShippingSink` ships flight-recorder lines to the fleet.
It depends only on the plane below it, never on the operator's services.
"""

from knightwatch.control.node.attestor import Attestor, directory_measure
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.node.lease import LeaseError, LeasePolicy
from knightwatch.control.node.runtime import NodeError, NodeRuntime
from knightwatch.control.node.shipping import ShippingSink

__all__ = [
    "Attestor",
    "LeaseError",
    "LeasePolicy",
    "NodeError",
    "NodeFlags",
    "NodeRuntime",
    "ShippingSink",
    "directory_measure",
]
