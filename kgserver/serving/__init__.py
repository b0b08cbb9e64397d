"""gRPC serving: the model holder with hot swap, the batching scorer, the servicer.

Submodules import torch and grpc; this package itself imports nothing heavy so
that ``python -m kgserver.serving.codegen`` and the CLI stay light.
"""
