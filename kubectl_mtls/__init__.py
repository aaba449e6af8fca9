"""kubectl-mtls: find why Istio mutual TLS fails, with evidence and the fix."""

__version__ = "0.1.0"
