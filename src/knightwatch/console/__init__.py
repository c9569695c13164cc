"""The operator console: the fleet's kill switch, halts, approvals and audit in a browser.

The people who must stop a runaway are not all at a terminal with a key file
and the CLI installed: a risk officer or a desk head has a browser. The console
gives them the same control plane the CLI drives, with the same signed
commands, roles from the same signed roster and every request audited. It is
its own process, never part of an order router, and it is never the only way
to stop: the CLI's kill works without it, so a console that is down, slow or
broken takes no stop away.

- `app`: the pages, the JSON API and the live stream, one policy for all three;
- `view`: the fleet snapshot, judged as nodes judge the kill state;
- `users`: passwords (argon2id), each person's key wrapped under them, API tokens;
- `sessions`: server-side sessions and the login throttle;
- `audit`: every request in the flight recorder's chained format, search, export;
- `serve`: start-up on a viewer-only identity, uvicorn on loopback;
- `local`: a local fleet and console as processes (tests, bench).
"""

from knightwatch.console.app import Console, ConsoleError, ConsoleSettings, build_app
from knightwatch.console.serve import open_console, run, settings_for
from knightwatch.console.sessions import LoginThrottle, Sessions
from knightwatch.console.users import ConsoleUserError, LoginFailed, UserStore

__all__ = [
    "Console",
    "ConsoleError",
    "ConsoleSettings",
    "ConsoleUserError",
    "LoginFailed",
    "LoginThrottle",
    "Sessions",
    "UserStore",
    "build_app",
    "open_console",
    "run",
    "settings_for",
]
