"""The live monitor (PyQt5): a thin shell over :class:`agender.analyzer.Analyzer` and
:mod:`agender.io.sources`.

Threads are what make it real time: a capture thread keeps only the newest frame
(:mod:`agender.gui.capture`), an inference worker analyses and renders it
(:mod:`agender.gui.worker`), and the UI thread only paints. Nothing here knows about model
files or output formats.

This package imports PyQt5 lazily (only its submodules do), so ``import agender.gui.config``
works on a machine without Qt and the CLI keeps working there.
"""
