"""curator: face dataset curation.

Footage in, one identity's most diverse faces out. Each pipeline stage is a
module named after it (extract, identify, curate, export, ...) whose functions
take a workspace or a table and return plain values; `curator.cli` is a thin
command-line layer over them.
"""

__version__ = "0.1.0"
