"""Inputs (sources) and outputs (sinks)."""
