"""Generate Python code (and mypy stubs) from protos/ into services/gen/, and
the API reference docs/api.md.

``python -m services.devtools.genprotos`` writes both;
``--check`` compares instead and exits 1 when either is out of date.

protos/ is a buf module: files import each other as ``scf/<package>/v1/...``,
so protoc writes ``from scf.types.v1 import money_pb2``. The code lives in our
package as ``services.gen.scf``, so those import lines (and only those) are
rewritten as the output is written; nothing else in it is touched.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from services.devtools import apidoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GEN = ROOT / "services" / "gen"
REFERENCE = ROOT / "docs" / "api.md"
#: An import of another generated module, as protoc writes it.
_OUR_IMPORT = re.compile(r"^from scf\.", re.MULTILINE)


def generate(out_root: Path) -> Path:
    """Run protoc into ``out_root``; returns the generated ``services/gen`` dir."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTOS}", f"-I{well_known}",
            f"--python_out={out_root}", f"--grpc_python_out={out_root}",
            f"--mypy_out={out_root}", f"--mypy_grpc_out={out_root}",
            "--include_source_info", f"--descriptor_set_out={out_root / 'protos.pb'}",
            *(f"{PROTOS}/{f}" for f in files),
        ],
        env=env,
        capture_output=True,  # mypy-protobuf names every file it writes
        text=True,
    )  # fmt: skip
    if result.returncode:
        sys.exit(f"protoc failed:\n{result.stderr}")
    gen = out_root / "services" / "gen"
    gen.mkdir(parents=True)
    (out_root / "scf").rename(gen / "scf")
    for path in gen.rglob("*.py*"):
        path.write_text(_OUR_IMPORT.sub("from services.gen.scf.", path.read_text()))
    for directory in [gen, *(p for p in gen.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return gen


def _differences(a: Path, b: Path) -> list[str]:
    names_a = {
        p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    names_b = {
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    diffs = [f"only in protos output: {n}" for n in sorted(names_a - names_b)]
    diffs += [f"stale file: {n}" for n in sorted(names_b - names_a)]
    diffs += [
        f"differs: {n}"
        for n in sorted(names_a & names_b)
        if not filecmp.cmp(a / n, b / n, shallow=False)
    ]
    return diffs


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        reference = apidoc.render((Path(tmp) / "protos.pb").read_bytes())
        if "--check" in argv:
            diffs = _differences(fresh, GEN)
            if not REFERENCE.exists() or REFERENCE.read_text() != reference:
                diffs.append(f"differs: {REFERENCE.relative_to(ROOT)}")
            for d in diffs:
                print(d)
            if diffs:
                print("services/gen or docs/api.md is out of date with protos/: run `make protos`")
            return 1 if diffs else 0
        if GEN.exists():
            shutil.rmtree(GEN)
        shutil.copytree(fresh, GEN)
        REFERENCE.write_text(reference)
    print(f"generated {GEN.relative_to(ROOT)} and {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
