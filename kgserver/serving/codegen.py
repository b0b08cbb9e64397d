"""Regenerate (or check) the committed Python stubs of ``proto/kgserver/v1/kgserver.proto``.

Usage: ``python -m kgserver.serving.codegen`` writes ``kgserver/proto/v1/kgserver_pb2*.py``;
``--check`` regenerates into a temporary directory and exits 1 when the committed
files differ. The .proto is mapped to the virtual path ``kgserver/proto/v1/`` so that
the generated gRPC module imports ``kgserver.proto.v1.kgserver_pb2``, a module inside
this package, rather than a top-level ``kgserver.v1`` that would clash with it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto" / "kgserver" / "v1"
VIRTUAL_DIR = "kgserver/proto/v1"
STUB_DIR = ROOT / VIRTUAL_DIR
GENERATED = ("kgserver_pb2.py", "kgserver_pb2.pyi", "kgserver_pb2_grpc.py")


def generate(out_root: Path) -> Path:
    """Run grpc_tools.protoc into ``out_root``; return the directory holding the stubs."""
    from grpc_tools import protoc  # a build-time tool, not a runtime dependency

    args = [
        "grpc_tools.protoc",
        f"-I{VIRTUAL_DIR}={PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"{VIRTUAL_DIR}/kgserver.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return out_root / VIRTUAL_DIR


def stale_files() -> list[str]:
    """Names of committed stubs that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [
            name
            for name in GENERATED
            if not (STUB_DIR / name).exists()
            or (STUB_DIR / name).read_bytes() != (fresh / name).read_bytes()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale stubs (exit 1)")
    options = parser.parse_args(argv)
    if options.check:
        stale = stale_files()
        if stale:
            print(f"stale generated stubs: {', '.join(stale)}; run python -m kgserver.serving.codegen")
            return 1
        print("generated stubs are up to date")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        for name in GENERATED:
            (STUB_DIR / name).write_bytes((fresh / name).read_bytes())
    print(f"wrote {', '.join(GENERATED)} to {STUB_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
