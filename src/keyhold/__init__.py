"""Keyhold: direct messaging where every conversation says, enforces and proves who can read it."""

__version__ = "0.1.0"
