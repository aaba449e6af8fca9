"""Subcommands. Each module exposes `register(subparsers, parents)`; its handler returns an exit code."""
