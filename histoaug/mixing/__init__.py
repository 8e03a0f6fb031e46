"""Mixing synthetic patches into training: ``SyntheticPCam`` (dataset), ``SyntheticSwap`` (transform)."""
