"""Generate everything derived from `protos/`: one command, deterministic output.

    python scripts/protos.py generate   # rewrite the generated code and descriptor
    python scripts/protos.py check      # fail if the committed output is stale
    python scripts/protos.py image OUT [--source DIR]
                                        # a buf image (FileDescriptorSet) for lint/breaking

Outputs (each deleted and rewritten by `generate`, compared by `check`):
  clients/python/taskapi/{v1,buf}  Python messages and stubs (grpcio-tools' protoc); buf.validate
                                    is moved under the taskapi namespace (taskapi.buf.validate)
                                    so no generic top-level `buf` package is installed
  envoy/taskapi.binpb               the descriptor Envoy's transcoder loads; it is
                                    also the buf image the other generators read
  clients/ts/gen                    JavaScript + .d.ts (buf generate, local protoc-gen-es)
  clients/go/{taskapi,buf}          Go (buf generate, Debian's protoc-gen-go{,-grpc})
  clients/openapi/taskapi.openapi.json
                                    OpenAPI 3 of the REST surface (clients/openapi/generate.py)
  docs/rpcs.md                      every RPC with its REST mapping, access level and retry
                                    policy, read from the method options (taskapi_client.policy)

Third-party protos come from installed packages at generation time, never from
the repo: `google/api` and `google/rpc` from googleapis-common-protos, the
well-known types from grpcio-tools, and `buf/validate/validate.proto` from the
serialized descriptor inside the protovalidate wheel (it ships no .proto file).
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    duration_pb2,
    field_mask_pb2,
    timestamp_pb2,
)
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PY_OUT = "clients/python"
DESCRIPTOR = "envoy/taskapi.binpb"
OPENAPI = "clients/openapi/taskapi.openapi.json"
RPC_DOCS = "docs/rpcs.md"
# Everything generated, relative to the repo root: deleted and rewritten on every run.
GENERATED = (
    f"{PY_OUT}/taskapi/v1",
    f"{PY_OUT}/taskapi/buf",
    DESCRIPTOR,
    "clients/ts/gen",
    "clients/go/taskapi",
    "clients/go/buf",
    OPENAPI,
    RPC_DOCS,
)
BUF = ROOT / "node_modules" / ".bin" / "buf"
# mypy-protobuf's plugin, installed beside this interpreter (a dev dependency).
MYPY_GRPC_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
# `buf generate` runs per template with these input filters. Well-known types come
# from each language's runtime; google/api and google/rpc Go code from Debian's genproto.
BUF_TEMPLATES = {
    "clients/ts/buf.gen.yaml": ["--exclude-path", "google/protobuf"],
    "clients/go/buf.gen.yaml": ["--path", "taskapi", "--path", "buf/validate"],
}
# Imported for Envoy's transcoder: it renders these error details as JSON.
EXTRA_DESCRIPTOR_INPUTS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
VALIDATE_PROTO = "buf/validate/validate.proto"
# protoc names Python modules after proto paths; buf/validate/validate.proto would become a
# top-level `buf` package in site-packages. It moves under our namespace instead, and the
# generated imports follow (the descriptor pool keys files by proto path, not module name).
VALIDATE_IMPORT = ("from buf.validate import", "from taskapi.buf.validate import")


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        sys.exit(f"missing package {module!r}: install the project's dev dependencies")
    return Path(spec.origin).parent


def _validate_descriptor_bytes() -> bytes:
    """The serialized validate.proto, read (not imported) from protovalidate's generated module."""
    source = (_package_dir("protovalidate") / "_gen/buf/validate/validate_pb.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "file_desc"
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    sys.exit("protovalidate's validate_pb.py no longer holds a file_desc(...) literal")


def _validate_descriptor_set(path: Path) -> None:
    """Write validate.proto and the well-known files it imports as a FileDescriptorSet."""
    fds = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        module.DESCRIPTOR.CopyToProto(fds.file.add())
    fds.file.add().ParseFromString(_validate_descriptor_bytes())
    path.write_bytes(fds.SerializeToString(deterministic=True))


def _our_protos(source: Path) -> list[str]:
    return sorted(p.relative_to(source).as_posix() for p in source.rglob("*.proto"))


def _protoc(work: Path, source: Path, args: list[str], inputs: list[str]) -> None:
    validate_set = work / "validate.binpb"
    _validate_descriptor_set(validate_set)
    googleapis = _package_dir("google.api.annotations_pb2").parent.parent  # holds google/api
    command = [
        "grpc_tools.protoc",
        f"-I{source}",
        f"-I{googleapis}",
        f"-I{_package_dir('grpc_tools') / '_proto'}",  # the well-known types
        f"--descriptor_set_in={validate_set}",
        *args,
        *inputs,
    ]
    # Plugins (mypy-protobuf narrates every file it writes) print on file descriptor 2: keep
    # that for failures only.
    with tempfile.TemporaryFile() as chatter:
        saved = os.dup(2)
        os.dup2(chatter.fileno(), 2)
        try:
            failed = protoc.main(command) != 0
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if failed:
            chatter.seek(0)
            sys.exit(f"protoc failed: {' '.join(command)}\n{chatter.read().decode(errors='replace')}")


def build(out: Path, source: Path = PROTOS) -> None:
    """Generate every output into `out`, laid out like the repo (see GENERATED)."""
    python = out / PY_OUT
    python.mkdir(parents=True)
    descriptor = out / DESCRIPTOR
    descriptor.parent.mkdir(parents=True)
    ours = _our_protos(source)
    _protoc(
        out,
        source,
        [
            f"--python_out={python}",
            f"--pyi_out={python}",
            f"--grpc_python_out={python}",
            # Typed gRPC stubs and servicers (*_pb2_grpc.pyi): grpcio-tools writes none.
            f"--plugin=protoc-gen-mypy_grpc={MYPY_GRPC_PLUGIN}",
            f"--mypy_grpc_out={python}",
        ],
        [*ours, VALIDATE_PROTO],
    )
    _protoc(
        out,
        source,
        [f"--descriptor_set_out={descriptor}", "--include_imports", "--include_source_info"],
        [*ours, *EXTRA_DESCRIPTOR_INPUTS],
    )
    # grpc stubs are written for every input; validate.proto has no services.
    for stub in ("validate_pb2_grpc.py", "validate_pb2_grpc.pyi"):
        (python / "buf/validate" / stub).unlink(missing_ok=True)
    _namespace_validate(python)
    _buf_generate(descriptor, out)
    _openapi(descriptor, out / OPENAPI)
    _rpc_docs(descriptor, out / RPC_DOCS)


def _namespace_validate(python: Path) -> None:
    """Move buf/validate to taskapi/buf/validate and point the generated imports at it."""
    (python / "buf").rename(python / "taskapi" / "buf")
    old, new = VALIDATE_IMPORT
    for module in (python / "taskapi").rglob("*_pb2.py*"):
        text = module.read_text()
        if old in text:
            module.write_text(text.replace(old, new))
    # PEP 561: the .pyi stubs are the types of the generated modules; type checkers of the
    # SDK's users (and ours) read them only from packages marked typed.
    for package in ("taskapi/v1", "taskapi/buf/validate"):
        (python / package / "py.typed").write_text("")


def _buf_generate(descriptor: Path, out: Path) -> None:
    """TypeScript and Go from the descriptor, with locally installed plugins only
    (the Buf registry is unreachable; see scripts/setup.sh --dev for the installs)."""
    if not BUF.exists():
        sys.exit(f"missing {BUF.relative_to(ROOT)}: run `bash scripts/setup.sh --dev`")
    for template, filters in BUF_TEMPLATES.items():
        command = [str(BUF), "generate", str(descriptor), "--template", template, "-o", str(out), *filters]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(
                f"buf generate failed ({template}): {result.stderr.strip()}\n"
                "the plugins come from `bash scripts/setup.sh --dev`"
            )


def _openapi(descriptor: Path, out_file: Path) -> None:
    if str(ROOT / "clients/openapi") not in sys.path:  # generate.py imports its sibling schema_rules.py
        sys.path.insert(0, str(ROOT / "clients/openapi"))
    spec = importlib.util.spec_from_file_location("taskapi_openapi", ROOT / "clients/openapi/generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    module.write(descriptor, out_file)


def _rpc_docs(descriptor: Path, out_file: Path) -> None:
    """The RPC table of docs/rpcs.md, from the fresh descriptor (not the installed modules,
    which are the previous generation's)."""
    sys.path.insert(0, str(ROOT / PY_OUT))  # taskapi_client.policy, also before an install
    from google.api import annotations_pb2
    from google.protobuf import descriptor_pool

    from taskapi_client.policy import policies_of

    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file:
        pool.Add(file)
    files = [pool.FindFileByName(name) for name in _our_protos(PROTOS) if name != "taskapi/v1/access.proto"]
    rows = []
    for policy in policies_of(files).values():
        method = pool.FindMethodByName(f"{policy.service}.{policy.name}")
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        rest = f"`{verb.upper()} {getattr(rule, verb)}`" if verb else "gRPC only"
        if policy.repeatable:
            retried = "yes"
        elif policy.request_id_field:
            retried = f"with `{policy.request_id_field}` set"
        else:
            retried = "only if it never ran"
        rows.append(
            f"| `{policy.service.removeprefix('taskapi.v1.')}.{policy.name}` | {rest} | {policy.access_name} "
            f"| {policy.idempotency_name} | {retried} |"
        )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(
        "<!-- Generated by `python scripts/protos.py generate` from the protos' method options; do not edit. -->\n"
        "# RPCs and their call policy\n\n"
        "Read from each RPC's options in `protos/taskapi/v1/`: `(taskapi.v1.access)`, the standard\n"
        "`idempotency_level`, and a `request_id` field (AIP-155). Envoy's retry routes and the Python\n"
        "SDK's retries are derived from the same options (`taskapi_client.policy`).\n\n"
        '"Retried" means: retried after UNAVAILABLE, a reset or a lost connection. "Only if it never ran":\n'
        "retried when the connection failed before the request was sent, or when the server marks its\n"
        "refusal `x-retry-safe: true` (shed before doing anything).\n\n"
        "| RPC | REST | access | idempotency | retried |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _files(base: Path) -> dict[str, Path]:
    """Every generated file under `base`, keyed by its repo-relative path."""
    files = {}
    for name in GENERATED:
        path = base / name
        candidates = [path] if path.is_file() else path.rglob("*")
        for file in candidates:
            if file.is_file() and "__pycache__" not in file.parts:
                files[file.relative_to(base).as_posix()] = file
    return files


def generate() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(out)
        for name in GENERATED:
            target, fresh = ROOT / name, out / name
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            if fresh.is_dir():
                shutil.copytree(fresh, target)
            else:
                shutil.copyfile(fresh, target)
    print("generated", *GENERATED, sep="\n  ")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(out)
        fresh = _files(out)
        committed = _files(ROOT)
        stale = sorted(
            name
            for name in fresh.keys() | committed.keys()
            if name not in fresh
            or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if stale:
        print("generated code is stale; run `python scripts/protos.py generate`:", *stale, sep="\n  ")
        return 1
    print(f"generated code is fresh ({len(fresh)} files)")
    return 0


def image(out_file: Path, source: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(
            Path(tmp),
            source,
            [f"--descriptor_set_out={out_file}", "--include_imports", "--include_source_info"],
            _our_protos(source),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("generate")
    commands.add_parser("check")
    image_parser = commands.add_parser("image")
    image_parser.add_argument("out", type=Path)
    image_parser.add_argument("--source", type=Path, default=PROTOS)
    args = parser.parse_args()
    if args.command == "generate":
        generate()
    elif args.command == "check":
        return check()
    else:
        image(args.out.resolve(), args.source.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
