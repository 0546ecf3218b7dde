"""README.md's quick start runs as written, against promptgate in front of the mock.

Every fenced block in README.md that starts with `# tested: tests/python/test_readme.py` is run
here: the shell block of `export`s sets the environment the Python snippets run in; every other
marked block must print a mock answer. The README keeps the default address, 127.0.0.1:8080;
only that address is replaced by the test proxy's before a block runs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import REPO, mock_number

MARKER = "# tested: tests/python/test_readme.py"
DEFAULT_ADDRESS = "127.0.0.1:8080"
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


def readme_blocks():
    """(language, first line number, code) of every fenced block in README.md."""
    text = (REPO / "README.md").read_text()
    return [
        (m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]


def is_exports(code):
    lines = [line for line in code.splitlines() if line and not line.startswith("#")]
    return all(line.startswith("export ") for line in lines)


BLOCKS = readme_blocks()
PYTHON = [(line, code) for lang, line, code in BLOCKS if lang == "python"]
SHELL = [(line, code) for lang, line, code in BLOCKS if lang == "sh" and code.startswith(MARKER)]
(EXPORTS,) = [code for _, code in SHELL if is_exports(code)]
COMMANDS = [(line, code) for line, code in SHELL if not is_exports(code)]


def at_proxy(code, proxy):
    return code.replace(DEFAULT_ADDRESS, urlsplit(proxy).netloc)


@pytest.fixture
def shell_env(sdk_env):
    """The test environment (API keys) without the base-URL variables, which the README must
    set itself; `python` is this venv's."""
    env = {k: v for k, v in os.environ.items() if k not in BASE_URL_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture
def readme_exports(proxy, shell_env):
    """The variables README's `export` block sets."""
    script = f"{at_proxy(EXPORTS, proxy)}\nenv -0"
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
    assert all(code.startswith(MARKER) for _, code in PYTHON), "mark every python block"
    for sdk_import in SDK_IMPORTS:
        assert any(sdk_import in code for _, code in PYTHON), f"no snippet does {sdk_import!r}"


def test_readme_exports_the_base_urls_the_sdk_tests_use(readme_exports, sdk_env):
    assert readme_exports == {name: sdk_env[name] for name in BASE_URL_VARIABLES}


@pytest.mark.parametrize("code", [c for _, c in PYTHON], ids=[f"README.md:{n}" for n, _ in PYTHON])
def test_readme_python_snippet(code, shell_env, readme_exports):
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**shell_env, **readme_exports},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    mock_number(result.stdout)


@pytest.mark.parametrize(
    "code", [c for _, c in COMMANDS], ids=[f"README.md:{n}" for n, _ in COMMANDS]
)
def test_readme_shell_snippet(code, proxy, shell_env):
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", at_proxy(code, proxy)],
        env=shell_env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    mock_number(result.stdout)
