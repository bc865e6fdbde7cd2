"""The docs stay true: every snippet marked ``<!-- runnable -->`` in README.md and docs/ runs,
and every relative link points at a file that exists."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
SNIPPET = re.compile(r"<!-- runnable -->\n```(python|bash)\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def snippets() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for i, (lang, code) in enumerate(SNIPPET.findall(page.read_text())):
            found.append((f"{page.relative_to(ROOT)}#{i}", lang, code))
    return found


def test_every_page_with_code_has_runnable_snippets() -> None:
    pages = {name.split("#")[0] for name, _, _ in snippets()}
    assert {"README.md", "docs/usage.md", "docs/thinc-layers.md"} <= pages


@pytest.mark.parametrize(("name", "lang", "code"), snippets(), ids=[s[0] for s in snippets()])
def test_snippet_runs(name: str, lang: str, code: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    argv = (
        [sys.executable, "-c", code]
        if lang == "python"
        else ["bash", "-euo", "pipefail", "-c", code]
    )
    result = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{name} failed:\n{code}\n{result.stdout}\n{result.stderr}"


def test_relative_links_point_at_files() -> None:
    broken = []
    for page in PAGES:
        for target, _ in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
