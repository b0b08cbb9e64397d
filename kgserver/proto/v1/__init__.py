"""Generated stubs of ``proto/kgserver/v1/kgserver.proto`` (package ``kgserver.v1``).

Never edit ``kgserver_pb2*.py``/``.pyi`` by hand: change the .proto and run
``python -m kgserver.serving.codegen``; ``tests/serving/test_codegen.py`` fails
when the committed stubs are stale.
"""
