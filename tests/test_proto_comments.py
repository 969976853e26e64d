"""Every service, RPC, message, field, enum and value of the documented protos
carries a comment (what buf lint's COMMENTS rules ask), read from protoc's own
source info. The list grows until it is every proto (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

PROTOS = Path(__file__).resolve().parents[1] / "protos"
#: The packages whose every element is commented (the auditor's API first).
DOCUMENTED = (
    "journal",
    "replica",
    "platform",
    "types",
    "orders",
    "scoring",
    "underwriting",
)


def _files(tmp_path: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    out = tmp_path / "protos.pb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-Iservices/gen={PROTOS}",
         f"-I{well_known}", "--include_source_info", f"--descriptor_set_out={out}",
         *map(str, sorted(PROTOS.rglob("*.proto")))],
        check=True,
    )  # fmt: skip
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def _uncommented(f: descriptor_pb2.FileDescriptorProto) -> list[str]:
    said = {
        tuple(loc.path)
        for loc in f.source_code_info.location
        if loc.leading_comments.strip() or loc.trailing_comments.strip()
    }
    missing: list[str] = []

    def need(path: list[int], name: str) -> None:
        if tuple(path) not in said:
            missing.append(name)

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: list[int], prefix: str) -> None:
        need(path, prefix + e.name)
        for j, v in enumerate(e.value):
            need([*path, 2, j], f"{prefix}{e.name}.{v.name}")

    def message(m: descriptor_pb2.DescriptorProto, path: list[int], prefix: str) -> None:
        need(path, prefix + m.name)
        for j, field in enumerate(m.field):
            need([*path, 2, j], f"{prefix}{m.name}.{field.name}")
        for j, nested in enumerate(m.nested_type):
            message(nested, [*path, 3, j], f"{prefix}{m.name}.")
        for j, e in enumerate(m.enum_type):
            enum(e, [*path, 4, j], f"{prefix}{m.name}.")

    for i, service in enumerate(f.service):
        need([6, i], service.name)
        for j, method in enumerate(service.method):
            need([6, i, 2, j], f"{service.name}.{method.name}")
    for i, m in enumerate(f.message_type):
        message(m, [4, i], "")
    for i, e in enumerate(f.enum_type):
        enum(e, [5, i], "")
    return missing


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[descriptor_pb2.FileDescriptorProto]:
    return _files(tmp_path_factory.mktemp("protos"))


@pytest.mark.parametrize("package", DOCUMENTED)
def test_every_element_is_commented(
    files: list[descriptor_pb2.FileDescriptorProto], package: str
) -> None:
    mine = [f for f in files if f.package.startswith(f"scf.{package}.")]
    assert mine, package
    missing = {f.name: _uncommented(f) for f in mine}
    assert not any(missing.values()), missing


def test_the_check_finds_what_is_not_commented() -> None:
    f = descriptor_pb2.FileDescriptorProto(name="x.proto", package="scf.x.v1")
    m = f.message_type.add(name="Thing")
    m.field.add(name="said", number=1)
    m.field.add(name="unsaid", number=2)
    f.source_code_info.location.add(path=[4, 0], leading_comments=" A thing. ")
    f.source_code_info.location.add(path=[4, 0, 2, 0], trailing_comments=" What. ")
    f.source_code_info.location.add(path=[4, 0, 2, 1], leading_comments="  ")
    assert _uncommented(f) == ["Thing.unsaid"]
