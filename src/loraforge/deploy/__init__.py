"""Containers, Kubernetes manifests and sizing. Imports only config: no torch."""
