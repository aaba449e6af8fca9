"""Pods and their proxies (sidecars, gateways, ztunnels) read from a source and normalized into the model.

It sits between `sources`/`normalize` and their users: the checks' context and the commands both read
through it, and it imports neither of them.
"""
