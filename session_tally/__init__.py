"""Composition root of session-tally: configuration, the CLI and the commands that wire domain, storage,
consumers and producers together."""

__all__: list[str] = []
