"""Layers point one way: src_pool uses qhealth's public face, qhealth reaches src_pool
only from its command line, integrations and sidecar share broker access without
importing each other, and no test module imports another."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from .conftest import ROOT


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports (absolute names; relative ones resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_qhealth_reaches_src_pool_only_from_its_command_line() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _files("qhealth")
        if "cli" not in path.relative_to(ROOT).parts
        for line, name in _imports(path)
        if name.split(".")[0] == "src_pool"
    ]
    assert not offenders, offenders


def test_src_pool_imports_no_private_qhealth_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in _files("src_pool")
        for line, name in _imports(path)
        if name.startswith("qhealth.") and any(part.startswith("_") for part in name.split(".")[1:2])
    ]
    assert not offenders, offenders


def test_integrations_and_the_sidecar_do_not_import_each_other() -> None:
    pairs = {("integrations", "sidecar"), ("sidecar", "integrations")}
    offenders = []
    for a, b in pairs:
        for path in _files(f"qhealth/{a}"):
            offenders += [
                f"{path.relative_to(ROOT)}:{line}: {name}"
                for line, name in _imports(path)
                if name.startswith(f"qhealth.{b}")
            ]
    assert not offenders, offenders


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{path.name}:{line}: {name}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[-1].startswith("test_") or ".test_" in name
    ]
    assert not offenders, offenders


def test_no_source_module_is_over_700_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for folder in ("qhealth", "src_pool")
        for path in _files(folder)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 700
    }
    assert not long, long


def test_the_top_level_names_stay_few_and_are_all_exported() -> None:
    """``import qhealth`` gives at most twenty names; everything else lives in a
    named submodule (qhealth.conditions, qhealth.traces, ...)."""
    import qhealth

    assert len(qhealth.__all__) <= 20, qhealth.__all__
    missing = [name for name in qhealth.__all__ if not hasattr(qhealth, name)]
    assert not missing, missing
