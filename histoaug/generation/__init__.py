"""Batch generation of synthetic datasets (``histoaug generate``): PCam HDF5 or PNG trees."""
