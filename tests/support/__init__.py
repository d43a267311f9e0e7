"""Shared helpers for scorer's tests: real models, real archives, real servers."""
