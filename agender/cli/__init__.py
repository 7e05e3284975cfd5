"""The `agender` command: a thin shell over the library (no model or file-format logic here)."""
