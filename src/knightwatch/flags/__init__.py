"""Flag governance: a flag is a contract with an identity (principle 5 in docs/architecture.md).

Knight's reused flag id meant "new router" on seven servers and "Power Peg" on
the eighth. This package makes an id mean one thing forever (registry and lint),
refuses to switch a flag on until every node that evaluates it runs a release
that knows that exact meaning (activation), turns it on in observed stages
(rollout), and evaluates it fail-closed in applications (OpenFeature provider).
"""
