"""FastStream subscribers of the input topics: decode nothing, hand raw batches to the unit of work."""

from consumers.subscriber import InputSubscriber

__all__ = ["InputSubscriber"]
