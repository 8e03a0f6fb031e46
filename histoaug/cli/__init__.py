"""The ``histoaug`` command line."""
