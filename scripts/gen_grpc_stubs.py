"""Regenerate dslc/serve/grpc_stubs/*_pb2*.py from the .proto files beside them (needs grpcio-tools).

    python scripts/gen_grpc_stubs.py

protoc writes `import model_config_pb2`, a top-level import; the stubs live in a package, so the imports are
rewritten to package-relative ones afterwards.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

STUBS = Path(__file__).resolve().parents[1] / "dslc" / "serve" / "grpc_stubs"
PROTOS = ["model_config.proto", "grpc_service.proto"]


def main() -> int:
    from grpc_tools import protoc
    args = ["protoc", f"-I{STUBS}", f"--python_out={STUBS}", f"--grpc_python_out={STUBS}",
            *[str(STUBS / p) for p in PROTOS]]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    (STUBS / "model_config_pb2_grpc.py").unlink(missing_ok=True)   # no services in that file
    for path in STUBS.glob("*_pb2*.py"):
        text = path.read_text()
        fixed = re.sub(r"^import (\w+_pb2) as (\w+)$", r"from . import \1 as \2", text, flags=re.M)
        path.write_text(fixed)
        print(f"wrote {path.relative_to(STUBS.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
