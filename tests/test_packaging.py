"""What the package declares is what is tested."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_requires_python_is_the_oldest_python_that_ci_runs():
    """The code imports tomllib (Python 3.11+); CI's Python is that oldest supported one."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert any("import tomllib" in p.read_text() for p in (ROOT / "autoresearch_bench").glob("*.py"))
    workflow = (ROOT / ".github" / "workflows" / "autoresearch.yml").read_text()
    assert set(re.findall(r'python-version: "([\d.]+)"', workflow)) == {"3.11"}
