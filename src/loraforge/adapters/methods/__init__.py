"""One module per method family, each declaring its ``SPECS`` (``registry.MethodSpec``) and the
function that builds it. Torch is imported inside the build functions only."""
