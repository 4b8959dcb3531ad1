"""The runtime (what answers questions) never imports the lab (what builds the model)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import babi_text

PACKAGE = Path(__file__).resolve().parents[1] / "longqa"
RUNTIME = sorted(p for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function, resolved to its absolute name."""
    package = ".".join(("longqa", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def test_no_runtime_module_imports_the_lab() -> None:
    assert len(RUNTIME) >= 10 and PACKAGE / "cli.py" in RUNTIME
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p) if m.startswith("longqa.lab"))
                 for p in RUNTIME}
    assert {p: m for p, m in offenders.items() if m} == {}


def test_ask_and_memorize_load_neither_the_lab_nor_transformers(tiny_model: Path, tmp_path: Path) -> None:
    """The lab is not the runtime's, and transformers (seconds to import) comes only with `import longqa.hf`."""
    text = tmp_path / "t.txt"
    text.write_text(babi_text(50))
    code = (
        "import sys; from longqa.cli import main\n"
        f"codes = [main(['ask', {str(text)!r}, 'Where is Mary?', '-m', {str(tiny_model)!r}, '--device', 'cpu', '-q']),\n"
        f"         main(['memorize', {str(text)!r}, '--save', {str(tmp_path / 'm.pt')!r}, '-m', {str(tiny_model)!r}, '--device', 'cpu', '-q'])]\n"
        "print(codes, sorted(m for m in sys.modules if m.startswith(('longqa.lab', 'longqa.hf', 'transformers'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[0, 0] []", done.stderr[-2000:]
