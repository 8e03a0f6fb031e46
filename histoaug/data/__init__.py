"""Reading and writing PCam-format HDF5 data."""
