"""docs/cli.md against the parser: every option of every subcommand is documented in its
section, and every option a section names exists."""

import argparse
import os
import re

import pytest

from corrtree.app.cli import build_parser
from corrtree.bench import BENCHMARKS

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "cli.md")


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _sections():
    text = open(DOC).read()
    parts = re.split(r"^## `corrtree (\w+)", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("name", ["train", "info", "predict", "demo", "hardness"])
def test_cli_doc_matches_parser(name):
    sub = _subparsers()[name]
    options = {
        s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"
    }
    section = _sections()[name]
    named = set(re.findall(r"(--[a-z][a-z0-9-]*)", section))
    undocumented = sorted(options - named)
    unknown = sorted(named - options)
    assert not undocumented, f"corrtree {name}: options missing from docs/cli.md: {undocumented}"
    assert not unknown, f"corrtree {name}: docs/cli.md names options that do not exist: {unknown}"


def test_every_option_has_help():
    missing = [
        f"{name} {a.option_strings[0]}"
        for name, sub in _subparsers().items()
        for a in sub._actions
        if a.option_strings and not a.help
    ]
    assert not missing, f"options without a help string: {missing}"


def test_every_benchmark_is_in_the_bench_table():
    table = set(re.findall(r"^\| `(\w+)` \|", _sections()["bench"], flags=re.M))
    assert table == set(BENCHMARKS), (
        f"docs/cli.md's bench table {sorted(table)} != the benchmarks {sorted(BENCHMARKS)}"
    )


def test_kernels_keep_ieee_comparisons():
    """docs/design.md: fast-math only with its two harmless flags, never one that assumes
    away NaN or infinities (the threshold comparisons must stay IEEE)."""
    root = os.path.join(os.path.dirname(__file__), "..", "corrtree", "_kernels")
    bare = [
        f"{f}: {line.strip()}"
        for f in sorted(os.listdir(root))
        if f.endswith(".py")
        for line in open(os.path.join(root, f))
        if "fastmath" in line and 'fastmath={"reassoc", "contract"}' not in line and "@njit" in line
    ]
    assert not bare, bare
