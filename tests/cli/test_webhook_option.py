"""`--webhook` checked before anything else, naming the option.

A URL no page can be posted to (`ftp://...`, credentials in it, spaces) was refused only
once the command ran: `resume`, `approve` and `supervisor` after reading the key and
connecting, `up` after claiming its state directory, each as "webhook_url: ...", an option
no command has. Now each is refused at parsing, exit 2, naming `--webhook` and the rule,
and nothing is read, connected or written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

runner = CliRunner()
COMMANDS = {
    "up": ["up"],
    "supervisor": ["supervisor"],
    "resume": ["resume", "--reason", "x"],
    "approve": ["approve", "abc123"],
}


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://pager.example/hook", "must start with http:// or https://"),
        ("https://user:secret@pager.example/hook", "must not carry user:password@ credentials"),
        ("https://pager.example/a hook", "must be printable ASCII without spaces"),
    ],
)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_webhook_no_page_can_reach_is_refused_naming_the_option(
    command: str, url: str, rule: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    result = runner.invoke(
        app,
        [*COMMANDS[command], "--webhook", url, "--state-dir", str(state)],
        env={"KNIGHTWATCH_KEY": str(tmp_path / "absent.key"), "COLUMNS": "300"},
    )
    out = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2, out
    assert "Invalid value for '--webhook'" in out and rule in out, out
    assert "secret" not in out, out  # the URL shown redacted, as the pager logs it
    assert "Traceback" not in out and "absent.key" not in out, out  # no key was read
    assert not state.exists()  # nothing claimed or written
