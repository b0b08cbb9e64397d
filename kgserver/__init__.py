"""kgserver: knowledge-graph completion from RDF to a gRPC service."""

import os as _os

__version__ = "0.1.0"

# DGL chooses its tensor backend when first imported: from DGLBACKEND, else from
# ~/.dgl/config.json, and when neither exists it writes that file and prints a
# notice to stdout, in front of whatever a command prints there (``--json``).
# kgserver runs DGL on PyTorch only, so it names that backend here, before any of
# its modules (or a plugin, which imports the registry first) can import DGL. A
# value the user set is left alone.
_os.environ.setdefault("DGLBACKEND", "pytorch")
