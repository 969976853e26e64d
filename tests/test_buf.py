"""buf's checks of protos/ (run by `make lint`) do catch what they are for:
a missing comment, a break of the wire or of generated code. Each case alters
a copy of the module and expects buf to refuse it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / ".ci" / "tools" / "node_modules" / ".bin" / "buf"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf comes with `make lint`")


def _module(tmp_path: Path) -> Path:
    copy = tmp_path / "module"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    return copy


def _buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _edit(module: Path, name: str, old: str, new: str) -> None:
    path = module / "protos" / "scf" / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_module_passes_lint(tmp_path: Path) -> None:
    assert _buf("lint", cwd=_module(tmp_path)).returncode == 0


def test_a_field_without_a_comment_fails_lint(tmp_path: Path) -> None:
    module = _module(tmp_path)
    _edit(module, "orders/v1/orders.proto", "message Order {", "message Order {\n  string x = 99;")
    result = _buf("lint", cwd=module)
    assert result.returncode != 0
    assert 'Field "x" should have a non-empty comment' in result.stdout


@pytest.mark.parametrize(
    ("name", "old", "new", "rule"),
    [
        # A field number reused for another type: old clients misread it.
        ("types/v1/money.proto", "string amount = 1;", "int64 amount = 1;", "FIELD_SAME_TYPE"),
        # A field removed without reserving its number.
        ("types/v1/money.proto", "string currency = 2;", "", "FIELD_NO_DELETE"),
        # An RPC removed from a service.
        ("platform/v1/platform.proto", "rpc WhoAmI(", "rpc WhoAmINow(", "RPC_NO_DELETE"),
    ],
)  # fmt: skip
def test_a_breaking_change_fails_breaking(
    tmp_path: Path, name: str, old: str, new: str, rule: str
) -> None:
    module = _module(tmp_path)
    _edit(module, name, old, new)
    result = _buf("breaking", "--against", str(ROOT / "protos"), "--error-format=json", cwd=module)
    assert result.returncode != 0
    assert rule in result.stdout


def test_an_added_field_is_not_a_break(tmp_path: Path) -> None:
    module = _module(tmp_path)
    _edit(module, "types/v1/money.proto", "string currency = 2;",
          "string currency = 2;\n  // A new field.\n  string note = 3;")  # fmt: skip
    assert _buf("breaking", "--against", str(ROOT / "protos"), cwd=module).returncode == 0
