"""The kiosk appliance around ``agender gui --kiosk``: a service that starts at boot, restarts on
crash or freeze, and logs to the journal.

- :mod:`agender.kiosk.install` — ``agender kiosk install [--dry-run]``: a systemd *user* unit
  (``Restart=always``, ``WatchdogSec``, ``Type=notify``) plus a desktop autostart entry that
  starts it once the graphical session is up (Raspberry Pi OS boots to an auto-login desktop).
- :mod:`agender.kiosk.watchdog` — inside the GUI: no new frame on screen for ``--watchdog S``
  seconds (a frozen camera, or a blocked display loop) → one log line and exit, so systemd
  restarts it; ``WATCHDOG=1`` pings to systemd only while frames keep coming, so a process hung
  beyond our own thread is killed by systemd too.
"""
