"""The diagnosis checks behind `kubectl mtls check`: one unit per check (see base.py)."""
