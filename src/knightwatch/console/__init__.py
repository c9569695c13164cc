"""The operator console: the fleet's kill switch, halts, approvals and audit in a browser.

The people who must stop a runaway are not all at a terminal with a key file
and the CLI installed: a risk officer or a desk head has a browser. The console
gives them the same control plane the CLI drives, with the same signed
commands, roles from the same signed roster and every request audited. It is
its own process, never part of an order router, and it is never the only way
to stop: the CLI's kill works without it, so a console that is down, slow or
broken takes no stop away.
"""
