"""kgserver: knowledge-graph completion from RDF to a gRPC service."""

__version__ = "0.1.0"
