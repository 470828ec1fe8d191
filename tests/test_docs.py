"""The documentation as a reader meets it: what it cites exists, and what it names is true."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from support import repo_root

#: Documents the repository does not ship; citing them leaves the reader nowhere.
UNSHIPPED = re.compile(r"spec §|original-spec|stack-probe|seed README|STYLE rule|anchors\.md|STYLE\.md")


def _tracked(*suffixes):
    files = subprocess.run(["git", "ls-files"], cwd=repo_root(), capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if f.endswith(suffixes) and "node_modules" not in f]


def test_nothing_cites_documents_the_repository_does_not_ship():
    offenders = []
    for path in _tracked(".py", ".md", ".js", ".mjs", ".cfg", ".sh", "run"):
        if path == "tests/test_docs.py":
            continue
        with open(os.path.join(repo_root(), path), encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if UNSHIPPED.search(line):
                    offenders.append("%s:%d: %s" % (path, number, line.strip()))
    assert not offenders, "\n".join(offenders)


def _named_tests():
    names = set()
    for path in _tracked(".md"):
        with open(os.path.join(repo_root(), path), encoding="utf-8") as handle:
            names.update(re.findall(r"(tests/test_\w+\.py)::(\w+)", handle.read()))
    return sorted(names)


@pytest.mark.parametrize("module, test", _named_tests())
def test_every_test_the_docs_name_exists(module, test):
    path = os.path.join(repo_root(), module)
    assert os.path.isfile(path), "%s is named in the docs but does not exist" % module
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    assert re.search(r"^(?:async )?def %s\(" % re.escape(test), source, re.M), \
        "%s::%s is named in the docs but does not exist" % (module, test)


def test_the_docs_name_tests_at_all():
    assert len(_named_tests()) > 50
