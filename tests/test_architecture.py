"""The house rules that keep spacy_trf/ readable top-down: short modules, short functions, one
place for defaults (the import layers are checked by `lint-imports`, see pyproject.toml)."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "spacy_trf"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_over_80_lines() -> None:
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert long == {}


def test_defaults_are_written_once() -> None:
    """The default model, window, stride and batch budget appear as literals only in
    defaults.py (configs and signatures read them from there)."""
    literal = re.compile(r"all-MiniLM-L6-v2\"|\b(126|110|2048)\b")
    found = []
    for path in modules():
        if path.name == "defaults.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if literal.search(code) and "PACKAGED_MODELS" not in code:
                found.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert found == []
