"""Benchmarks whose numbers the README publishes."""
