"""buf.gen.yaml generates Go and TypeScript clients from protos/ with local
plugins: Debian's protoc-gen-go and protoc-gen-go-grpc, and protoc-gen-es
from clients/typescript. The TypeScript is type-checked with tsc --strict;
the Go is not compiled (no Go toolchain in CI), only read for its package and
client interface."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
TYPESCRIPT = ROOT / "clients" / "typescript"
RPCS = ("Chat", "Complete", "Embed", "ListRoutes", "Feedback", "GetExperiment")
TSCONFIG = """{
  "compilerOptions": {
    "strict": true, "noEmit": true, "target": "es2022",
    "module": "nodenext", "moduleResolution": "nodenext",
    "skipLibCheck": true
  },
  "include": ["typescript/**/*.ts"]
}
"""


def require_plugins() -> None:
    for plugin in ("protoc-gen-go", "protoc-gen-go-grpc"):
        if shutil.which(plugin) is None:
            pytest.fail(f"{plugin} is not on PATH; `make test` installs it (apt-get)")
    if not (TYPESCRIPT / "node_modules" / ".bin" / "protoc-gen-es").exists():
        pytest.fail("clients/typescript/node_modules is missing; `make test` runs `npm ci` there")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_plugins()
    out = tmp_path_factory.mktemp("generated")
    done = subprocess.run(
        [BIN / "buf", "generate", "--template", "buf.gen.yaml", "-o", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"buf generate failed:\n{done.stderr}"
    return out


def test_go_messages_and_grpc_client_in_the_go_package_option(generated: Path) -> None:
    go = generated / "go" / "sluice" / "v1"
    assert sorted(path.name for path in go.iterdir()) == ["gateway.pb.go", "gateway_grpc.pb.go"]
    messages = (go / "gateway.pb.go").read_text()
    service = (go / "gateway_grpc.pb.go").read_text()
    # `go_package = ".../sluice/v1;sluicev1"` names the package.
    assert re.search(r"^package sluicev1$", messages, re.MULTILINE)
    assert re.search(r"^package sluicev1$", service, re.MULTILINE)
    assert "type ChatRequest struct" in messages
    client = re.search(r"type GatewayServiceClient interface \{(.*?)\n\}", service, re.DOTALL)
    assert client, "no GatewayServiceClient interface"
    assert re.findall(r"^\t(\w+)\(ctx", client.group(1), re.MULTILINE) == list(RPCS)
    assert "Chat(ctx context.Context, in *ChatRequest," in client.group(1)


def test_typescript_messages_and_service_type_check_strictly(generated: Path) -> None:
    module = generated / "typescript" / "sluice" / "v1" / "gateway_pb.ts"
    source = module.read_text()
    assert "export const GatewayService: GenService<{" in source
    for rpc in RPCS:
        method = rpc[0].lower() + rpc[1:]
        assert re.search(rf"^\s+{method}: \{{$", source, re.MULTILINE), f"no {method} method"
    # Message$1: protobuf-es's Message type, renamed beside sluice.v1.Message.
    assert re.search(r'^export type ChatRequest = [\w$]+<"sluice\.v1\.ChatRequest">', source, re.M)
    # Resolve @bufbuild/protobuf from clients/typescript, as a project using it would.
    (generated / "node_modules").symlink_to(TYPESCRIPT / "node_modules")
    (generated / "tsconfig.json").write_text(TSCONFIG)
    node = shutil.which("node")
    assert node, "node is not on PATH: Node.js 20+ is required"
    tsc = TYPESCRIPT / "node_modules" / "typescript" / "bin" / "tsc"
    done = subprocess.run(
        [node, tsc, "-p", generated / "tsconfig.json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"tsc failed:\n{done.stdout}{done.stderr}"
