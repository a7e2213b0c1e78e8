"""The layers of eotdlfs, read from the code's own imports (module level and inside functions).

`fs` reaches a repository only through the ports (`eotdlfs.repository`); `eotdlfs.app` is the
one place that wires the client, the server and the filesystem together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eotdlfs"
MAX_LINES = 450
MAX_LINE_CHARS = 120
HTTP = ("requests", "urllib3", "http", "httpx", "fastapi", "starlette", "uvicorn")
FUSE_BINDING = ("fuse", "mfusepy")
FSSPEC = ("fsspec",)


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def imported(path: Path, package: str | None = None) -> set[str]:
    """Every module PATH (of PACKAGE, by default the one it lies in) imports, anywhere in it,
    relative imports resolved."""
    package = package or ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
    return names


def within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def offenders(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in modules(layer):
        bad = sorted(n for n in imported(path) if within(n, forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


def test_the_rule_reader_sees_imports_inside_functions_and_relative_ones(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import requests\n    from ..fetcher import Content\n")
    assert imported(sample, "eotdlfs.fs.staging") == {"requests", "eotdlfs.fs.fetcher"}
    assert within("eotdlfs.client.api", ("eotdlfs.client",)) and not within("eotdlfs.clientx", ("eotdlfs.client",))


@pytest.mark.parametrize("layer, forbidden", [
    ("fs", ("eotdlfs.client", "eotdlfs.server", "eotdlfs.app", *HTTP, *FSSPEC)),
    ("client", ("eotdlfs.fs", "eotdlfs.server", "eotdlfs.app", *FUSE_BINDING, *FSSPEC)),
    ("server", ("eotdlfs.client", "eotdlfs.fs", "eotdlfs.app", *FUSE_BINDING, *FSSPEC)),
])
def test_layers_import_only_what_they_may(layer, forbidden):
    assert offenders(layer, forbidden) == {}


def test_the_ports_and_shared_helpers_import_no_layer():
    shared = [p for p in PACKAGE.glob("*.py") if p.name not in ("cli.py", "__main__.py", "__init__.py")]
    bad = {p.name: sorted(n for n in imported(p) if within(n, ("eotdlfs.client", "eotdlfs.server", "eotdlfs.fs",
                                                              "eotdlfs.app", *HTTP, *FUSE_BINDING, *FSSPEC)))
           for p in shared}
    assert {name: names for name, names in bad.items() if names} == {}


def test_the_package_itself_only_hands_out_the_python_api():
    """`eotdlfs.connect` comes from the composition root, imported when first asked for."""
    assert imported(PACKAGE / "__init__.py") == {"__future__", "typing", "eotdlfs.app"}


def test_the_fuse_binding_is_imported_in_one_module_of_fs():
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if any(within(n, FUSE_BINDING)
                                                                              for n in imported(p))]
    assert users == ["fs/fuse_binding.py"]


def test_fsspec_is_imported_in_one_adapter_beside_the_composition_root():
    """`eotdl://` is an adapter like the FUSE one: fs and client know nothing of it."""
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if any(within(n, FSSPEC)
                                                                              for n in imported(p))]
    assert users == ["app/fsspec_eotdl.py"]


def test_cli_is_only_typer_and_calls_into_the_layers():
    """cli.py parses options; the work (and its printing) is in app, fs.mount or the server."""
    source = (PACKAGE / "cli.py").read_text()
    assert "print(" not in source and "rich" not in source


def test_no_module_is_over_the_size_limit():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_line_is_over_the_width_limit():
    wide = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > MAX_LINE_CHARS]
    assert wide == []


def test_pyflakes_finds_nothing_in_the_package():
    """Unused imports and undefined names: merges of parallel branches left some behind."""
    import io

    from pyflakes.api import checkRecursive
    from pyflakes.reporter import Reporter

    out = io.StringIO()
    checkRecursive([str(PACKAGE)], Reporter(out, out))
    assert out.getvalue() == ""
