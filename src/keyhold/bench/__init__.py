"""Benchmarks (`keyhold bench ...`) and the bare relay they compare with."""
