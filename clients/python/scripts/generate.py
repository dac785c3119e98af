"""Generate the Python code for protos/ into sluice_client.v1.

`python clients/python/scripts/generate.py` rewrites the committed files;
`--check` regenerates in memory and fails if the committed files are stale.
Imports are rewritten from `sluice.v1` to `sluice_client.v1` so the generated
modules resolve inside the distribution that ships them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[3]
PROTOS = REPO / "protos"
TARGET = REPO / "clients" / "python" / "src" / "sluice_client" / "v1"
BIN = Path(sys.executable).parent


def generate(out: Path) -> dict[str, str]:
    """Run protoc into `out`; return generated file name -> rewritten text."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files = {}
    for path in sorted((out / "sluice" / "v1").iterdir()):
        text = path.read_text()
        files[path.name] = text.replace("from sluice.v1 import", "from sluice_client.v1 import")
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    files["__init__.py"] = '"""Generated code for the sluice.v1 protos (do not edit)."""\n'
    if check:
        stale = [
            name
            for name, text in files.items()
            if not (TARGET / name).exists() or (TARGET / name).read_text() != text
        ]
        extra = sorted(p.name for p in TARGET.iterdir() if p.is_file() and p.name not in files)
        if stale or extra:
            print(f"generated code is stale: {stale + extra}; run {Path(__file__).name}")
            return 1
        print("generated code is fresh")
        return 0
    shutil.rmtree(TARGET, ignore_errors=True)
    TARGET.mkdir(parents=True)
    for name, text in files.items():
        (TARGET / name).write_text(text)
    print(f"wrote {len(files)} files to {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
