"""Regenerate the gRPC Python code from protos/scanpay/v1/*.proto.

Run from anywhere: ``python protos/generate.py``. ``--check`` regenerates into a
temporary folder and exits 1 when the committed code differs (drift).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos" / "scanpay" / "v1"
BIN = Path(sys.executable).parent


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")


def generated_files(base: Path) -> list[Path]:
    d = base / "protos" / "scanpay" / "v1"
    return sorted(p.relative_to(base) for p in d.iterdir() if "_pb2" in p.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        new = generated_files(out)
        if args.check:
            old = generated_files(ROOT)
            if old != new:
                print(f"generated files differ: {old} vs {new}", file=sys.stderr)
                return 1
            for rel in new:
                if not filecmp.cmp(out / rel, ROOT / rel, shallow=False):
                    print(f"drift in {rel}: run python protos/generate.py", file=sys.stderr)
                    return 1
            print("generated code is up to date")
            return 0
        for rel in generated_files(ROOT):
            (ROOT / rel).unlink()
        for rel in new:
            shutil.copyfile(out / rel, ROOT / rel)
        print(f"wrote {len(new)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
