"""Output writers: one small module per format, all behind :class:`~agender.io.sinks.base.Sink`."""
from agender.io.sinks.base import Sink, atomic_write_bytes, atomic_write_text

__all__ = ["Sink", "atomic_write_bytes", "atomic_write_text"]
