"""Generate everything derived from `protos/`: one command, deterministic output.

    python scripts/protos.py generate   # rewrite the generated code and descriptor
    python scripts/protos.py check      # fail if the committed output is stale
    python scripts/protos.py image OUT [--source DIR]
                                        # a buf image (FileDescriptorSet) for lint/breaking

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
import shutil
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
PY_OUT = ROOT / "clients" / "python"
# Generated Python packages: deleted and rewritten on every run.
PY_PACKAGES = ("taskapi/v1", "buf")
DESCRIPTOR = ROOT / "envoy" / "taskapi.binpb"
# Imported for Envoy's transcoder: it renders these error details as JSON.
EXTRA_DESCRIPTOR_INPUTS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
VALIDATE_PROTO = "buf/validate/validate.proto"


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
    if protoc.main(command) != 0:
        sys.exit("protoc failed: " + " ".join(command))


def build(out: Path, source: Path = PROTOS) -> None:
    """Generate into `out`: Python under out/python, the descriptor at out/taskapi.binpb."""
    python = out / "python"
    python.mkdir(parents=True)
    ours = _our_protos(source)
    _protoc(
        out,
        source,
        [f"--python_out={python}", f"--pyi_out={python}", f"--grpc_python_out={python}"],
        [*ours, VALIDATE_PROTO],
    )
    _protoc(
        out,
        source,
        [f"--descriptor_set_out={out / 'taskapi.binpb'}", "--include_imports", "--include_source_info"],
        [*ours, *EXTRA_DESCRIPTOR_INPUTS],
    )
    # grpc stubs are written for every input; validate.proto has no services.
    (python / "buf/validate/validate_pb2_grpc.py").unlink(missing_ok=True)


def _outputs(base_python: Path, descriptor: Path) -> dict[str, Path]:
    files = {f"descriptor:{descriptor.name}": descriptor}
    for package in PY_PACKAGES:
        for path in (base_python / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(base_python).as_posix()] = path
    return files


def generate() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(out)
        for package in PY_PACKAGES:
            shutil.rmtree(PY_OUT / package, ignore_errors=True)
            shutil.copytree(out / "python" / package, PY_OUT / package)
        DESCRIPTOR.parent.mkdir(exist_ok=True)
        shutil.copyfile(out / "taskapi.binpb", DESCRIPTOR)
    print(f"generated {', '.join(PY_PACKAGES)} under {PY_OUT.relative_to(ROOT)} and {DESCRIPTOR.relative_to(ROOT)}")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(out)
        fresh = _outputs(out / "python", out / "taskapi.binpb")
        committed = _outputs(PY_OUT, DESCRIPTOR)
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
