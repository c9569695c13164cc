"""The FIX risk gateway: the Guard in front of any OMS, in any language, on the FIX path.

- `engine`: QuickFIX loaded on demand (a missing engine is one clear error) and
  callbacks that can never end the process;
- `config`: the gateway's TOML (sessions, venue, policies) and generated
  QuickFIX settings;
- `containment`: the listener reachable from allowed addresses only;
- `fields`: FIX tags and builders shared by all roles;
- `book`: the orders the gateway routed and the requests in flight;
- `gateway`: the proxy (client sessions in, Guard, venue session out);
- `service`: the gateway as a fleet node (lease, kill with venue cancels);
- `metrics`: the gateway's counters and session state as Prometheus metrics;
- `venue`: a FIX venue on the simulated market; `client`: a FIX order-entry client;
- `drill`: a day of FIX flow plus a Power Peg runaway through the gateway.

Importing this package does not import QuickFIX; the modules that run
sessions load it when first used.
"""
