"""A YAML merge key (`<<`) in the registry is refused in one line naming the rule.

Merged keys sit under the keys written beside them, so a flag's safe default or id could
come from elsewhere; the refusal read only "could not determine a constructor for the
tag 'tag:yaml.org,2002:merge'".
"""

from __future__ import annotations

import pytest

from knightwatch.flags.registry import RegistryError, parse_registry

ENTRY = """\
version: 1
flags:
  - id: trading.smars.rlp_enabled
    description: RLP routing
    created: 2012-07-01
    lifecycle: active
    safe_default: false
    trading_behaviour: true
    {merge}
"""


@pytest.mark.parametrize(
    "merge",
    [
        "<<: {safe_default: true}",
        "<<: [{safe_default: true}, {id: trading.smars.power_peg}]",
        "!!merge <<: {safe_default: true}",
        '? "<<"\n    : {safe_default: true}',
    ],
)
def test_a_merge_key_is_refused_naming_line_and_rule(merge: str) -> None:
    text = ENTRY.format(merge=merge)
    if merge.startswith("?"):  # a quoted "<<" is a plain key: an unknown field, refused
        with pytest.raises(RegistryError, match=r"unknown field `<<`"):
            parse_registry(text, "r.yaml")
        return
    with pytest.raises(RegistryError) as info:
        parse_registry(text, "r.yaml")
    message = str(info.value)
    assert message.startswith("r.yaml: line 9, column 5: YAML merge keys (<<) are not allowed")
    assert info.value.line == 9 and "\n" not in message
