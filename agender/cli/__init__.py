"""The `agender` command: a thin shell over the library (no model or file-format logic here)."""
from agender.cli.common import quiet_native_logs

quiet_native_logs()  # before any subcommand module imports OpenCV
