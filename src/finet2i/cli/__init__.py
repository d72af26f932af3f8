"""The `finet2i` command line."""
