"""The built-in demo creative scorer: generated creatives and the training that learns them.

- :mod:`scorer.demo.creatives`: the procedural creative generator and the label functions;
- :mod:`scorer.demo.training`: training, evaluation and the cached model of ``scorer demo``.

Training needs the optional ``demo`` extra (scipy, for the held-out rank correlations):
``pip install 'scorer[demo]'``. Nothing outside this package imports it, so the server and
the other ``scorer`` commands run without scipy. This module itself imports nothing.
"""

from __future__ import annotations

EXTRA_MODULES = ("scipy",)
"""Top-level modules of the ``demo`` extra that :mod:`scorer.demo.training` imports."""

INSTALL_HINT = "pip install 'scorer[demo]'"
"""How to install the ``demo`` extra."""
