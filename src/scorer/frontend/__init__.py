"""What both HTTP front ends share (the local emulator and the self-managed gateway).

:mod:`~scorer.frontend.body` reads a request body within a limit;
:mod:`~scorer.frontend.backend` is the model server behind a front end, with the model
cache in multi-model mode; :mod:`~scorer.frontend.metrics` is their ``GET /metrics``.
``serving`` and ``local`` import this; it imports neither.
"""
