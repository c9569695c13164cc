"""Release governance: signed manifests, node attestation and admission.

Knight's eighth server ran code nobody had checked. Here a release is a signed
statement of file, config and flag-schema hashes; a node proves what it
actually runs; and the control plane admits only nodes whose proof matches a
release signed by enough distinct people for the fleet's target release.
"""
