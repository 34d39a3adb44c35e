"""The sub-commands of `session-tally`, one module each with ``register(subparsers)``; each imports its
heavy dependencies inside the functions that need them, so that ``session-tally replay`` starts fast."""
