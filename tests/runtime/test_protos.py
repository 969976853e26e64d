import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.devtools.genprotos", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reference_lists_every_rpc_and_message_of_the_client_packages() -> None:
    from google.protobuf import descriptor_pool

    from services.devtools.apidoc import INTERNAL_PACKAGES

    reference = (ROOT / "docs" / "api.md").read_text()
    pool = descriptor_pool.Default()
    for proto in sorted(ROOT.glob("protos/scf/*/v1/*.proto")):
        name = proto.relative_to(ROOT / "protos")
        importlib.import_module(
            "services.gen." + str(name.with_suffix("")).replace("/", ".") + "_pb2"
        )
        file = pool.FindFileByName(str(name))
        if file.package in INTERNAL_PACKAGES:
            assert f'id="{file.package}' not in reference
            continue
        for service in file.services_by_name.values():
            assert f'id="{service.full_name}"' in reference
            for method in service.methods:
                assert f"| `{method.name}` |" in reference
        for message in file.message_types_by_name.values():
            assert f'id="{message.full_name}"' in reference


def test_reference_renders_maps_optionals_and_oneofs() -> None:
    from google.protobuf import descriptor_pb2

    from services.devtools.apidoc import render

    file = descriptor_pb2.FileDescriptorProto(name="scf/x/v1/x.proto", package="scf.x.v1")
    message = file.message_type.add(name="Thing")
    entry = message.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=3, label=1)
    message.field.add(
        name="tags", number=1, type=11, label=3, type_name=".scf.x.v1.Thing.TagsEntry"
    )
    message.field.add(name="limit", number=2, type=3, label=1, proto3_optional=True, oneof_index=0)
    message.oneof_decl.add(name="_limit")
    message.field.add(name="a", number=3, type=9, label=1, oneof_index=1)
    message.oneof_decl.add(name="choice")
    location = file.source_code_info.location.add(path=[4, 0, 2, 0])
    location.leading_comments = " Labels | by name.\n"
    text = render(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    assert "| `tags` | map<`string`, `int64`> | Labels \\| by name. |" in text
    assert "| `limit` | optional `int64` |  |" in text
    assert "| `a` | `string` | One of `choice`." in text
    assert "TagsEntry" not in text.replace(".Thing.TagsEntry", "")
