"""Python stubs generated from ``proto/`` (see :mod:`kgserver.serving.codegen`)."""
