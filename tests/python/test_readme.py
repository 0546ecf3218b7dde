"""The documentation's snippets run as written, against promptgate in front of the mock.

Every fenced block in README.md and docs/*.md that starts with
`# tested: tests/python/test_readme.py` is run here:

- README's shell block of `export`s sets the environment the Python snippets run in;
- a `python` block must print a mock answer;
- a `sh` block must print a mock answer, or, when its second line is `# output: REGEX`, output
  that REGEX finds;
- a `yaml` block is a complete config that `promptgate check` accepts.

The docs keep the default addresses, 127.0.0.1:8080 (proxy) and 127.0.0.1:9090 (admin); only
those are replaced by the test proxy's before a block runs. Every Python block in README.md must
be marked.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import PROMPTGATE_BIN, REPO, binary, mock_number

MARKER = "# tested: tests/python/test_readme.py"
OUTPUT = "# output: "
DEFAULT_ADDRESS = "127.0.0.1:8080"
DEFAULT_ADMIN = "127.0.0.1:9090"
BASE_URL_VARIABLES = [
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "OLLAMA_HOST",
    "GOOGLE_GEMINI_BASE_URL",
]
SDK_IMPORTS = [
    "from openai import",
    "import anthropic",
    "import ollama",
    "from google import genai",
]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path):
    """(language, "file:line", code) of every fenced block in the file at `path`."""
    text = path.read_text()
    name = path.relative_to(REPO)
    return [
        (m.group(1), f"{name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]


def is_exports(code):
    lines = [line for line in code.splitlines() if line and not line.startswith("#")]
    return all(line.startswith("export ") for line in lines)


README = blocks(REPO / "README.md")
ALL = [block for path in DOCUMENTS for block in blocks(path)]
MARKED = [(lang, where, code) for lang, where, code in ALL if code.startswith(MARKER)]
(EXPORTS,) = [code for lang, where, code in README if lang == "sh" and code.startswith(MARKER) and is_exports(code)]
PYTHON = [(where, code) for lang, where, code in MARKED if lang == "python"]
COMMANDS = [(where, code) for lang, where, code in MARKED if lang == "sh" and not is_exports(code)]
CONFIGS = [(where, code) for lang, where, code in MARKED if lang == "yaml"]


def expected_output(code):
    """The block's `# output: REGEX`, if it has one."""
    lines = code.splitlines()
    if len(lines) > 1 and lines[1].startswith(OUTPUT):
        return lines[1][len(OUTPUT):]
    return None


@pytest.fixture
def at_gateway(gateway):
    """Rewrites a snippet's default addresses to the test proxy's and admin's."""
    proxy, admin = (urlsplit(url).netloc for url in gateway)
    return lambda code: code.replace(DEFAULT_ADDRESS, proxy).replace(DEFAULT_ADMIN, admin)


@pytest.fixture
def shell_env(sdk_env):
    """The test environment (API keys) without the base-URL variables, which the README must
    set itself; `python` is this venv's."""
    env = {k: v for k, v in os.environ.items() if k not in BASE_URL_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture
def readme_exports(at_gateway, shell_env):
    """The variables README's `export` block sets."""
    script = f"{at_gateway(EXPORTS)}\nenv -0"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=shell_env,
        capture_output=True,
        text=True,
        check=True,
    )
    env = dict(item.split("=", 1) for item in result.stdout.split("\0") if item)
    return {name: env.get(name) for name in BASE_URL_VARIABLES}


def test_readme_has_a_tested_python_snippet_for_each_sdk():
    readme_python = [code for lang, _, code in README if lang == "python"]
    assert all(code.startswith(MARKER) for code in readme_python), "mark every python block"
    for sdk_import in SDK_IMPORTS:
        assert any(sdk_import in code for code in readme_python), f"no snippet does {sdk_import!r}"


def test_the_docs_have_tested_snippets():
    tested = {where.split(":")[0] for _, where, _ in MARKED}
    for page in ["README.md", "docs/caching.md", "docs/configuration.md", "docs/operations.md"]:
        assert page in tested, f"{page} has no tested snippet"
    assert CONFIGS and COMMANDS and PYTHON


def test_readme_exports_the_base_urls_the_sdk_tests_use(readme_exports, sdk_env):
    assert readme_exports == {name: sdk_env[name] for name in BASE_URL_VARIABLES}


@pytest.mark.parametrize("code", [c for _, c in PYTHON], ids=[w for w, _ in PYTHON])
def test_python_snippet(code, shell_env, readme_exports):
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**shell_env, **readme_exports},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    mock_number(result.stdout)


@pytest.mark.parametrize("code", [c for _, c in COMMANDS], ids=[w for w, _ in COMMANDS])
def test_shell_snippet(code, at_gateway, shell_env):
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", at_gateway(code)],
        env=shell_env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    pattern = expected_output(code)
    if pattern is None:
        mock_number(result.stdout)
    else:
        assert re.search(pattern, result.stdout), f"{pattern!r} not in {result.stdout!r}"


@pytest.mark.parametrize("code", [c for _, c in CONFIGS], ids=[w for w, _ in CONFIGS])
def test_config_snippet_passes_check(code, tmp_path):
    config = tmp_path / "snippet.yaml"
    config.write_text(code)
    result = subprocess.run(
        [binary(PROMPTGATE_BIN), "check", "--config", str(config)],
        env={k: v for k, v in os.environ.items() if k != "PROMPTGATE_CONFIG"},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
