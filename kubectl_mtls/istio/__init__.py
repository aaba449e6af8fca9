"""Pure re-implementations of the Istio rules kubectl-mtls reasons about.

Each module takes plain Kubernetes JSON dicts (as `kubectl get -o json` or a snapshot gives them),
does no I/O and uses only the standard library, so the rule engines can be tested table by table:

* `peerauthn` - which PeerAuthentication decides a workload's inbound mTLS mode, port by port;
* `destinationrule` - which DestinationRule a client applies to a service, and the TLS modes it sets;
* `authz` - AuthorizationPolicy scoping and the fields that need a peer identity (mTLS).
"""
