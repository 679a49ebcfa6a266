"""Datasets: file formats, the Kubernetes aligner, prompt templates and loss masking. Imports only config."""
