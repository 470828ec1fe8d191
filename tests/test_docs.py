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


# Every Python snippet of README.md and docs/ runs as written ----------------------------------------
#
# A fenced ```python block is preceded by a marker saying what it is:
#   <!-- run: server port=P [args="..."] -->  run it in a process; it must listen on P
#   <!-- run: client [expect="text"] -->      run it against the document's last server (else the
#                                             README's); exit 0, and print ``text`` when given
#   <!-- run: script -->  <!-- run: import --> run it to the end: exit 0
#   <!-- fragment[: why] -->                   a part of a program (a signature, a handler): not run
# An unmarked block fails the test, so nothing is skipped silently. The only edits made before
# running: the example ports become free ports, and ``redis://127.0.0.1:6379[/0]`` becomes the
# suite's own redis-server.

import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from support import free_port, port_open, terminate_process, wait_for  # noqa: E402

_BLOCK = re.compile(r"(?:<!-- (run|fragment)(?::? ?([^>]*?))? -->\n)?```python\n(.*?)```", re.S)
_DOCS = ["README.md"] + sorted("docs/" + name for name in os.listdir(os.path.join(repo_root(), "docs"))
                               if name.endswith(".md"))


def _blocks(path):
    with open(os.path.join(repo_root(), path), encoding="utf-8") as handle:
        text = handle.read()
    for match in _BLOCK.finditer(text):
        kind, spec, code = match.group(1), match.group(2) or "", match.group(3)
        line = text[:match.start()].count("\n") + 1
        if kind == "fragment":
            yield line, "fragment", {}, code
        elif kind == "run":
            words = shlex.split(spec)
            options = dict(word.split("=", 1) for word in words[1:])
            yield line, words[0], options, code
        else:
            yield line, None, {}, code


def _run_env():
    return dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PYTHONUNBUFFERED="1")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", [p for p in _DOCS if list(_blocks(p))])
def test_every_python_snippet_runs_as_written(path, redis_server, tmp_path):
    servers = []
    port_of_server = None
    try:
        for line, kind, options, code in _blocks(path):
            where = "%s:%d" % (path, line)
            assert kind is not None, "%s: a python block without a run/fragment marker" % where
            if kind == "fragment":
                continue
            code = re.sub(r"redis://127\.0\.0\.1:6379(?:/0)?", redis_server.url, code)
            if kind == "server":
                port = free_port()
                code = code.replace(options["port"], str(port))
                args = [a.replace(options["port"], str(port)) for a in shlex.split(options.get("args", ""))]
                proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=str(tmp_path), env=_run_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                servers.append(proc)
                try:
                    wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=30, message=where)
                except AssertionError:
                    raise AssertionError("%s did not listen" % where)
                assert proc.poll() is None, "%s exited: %s" % (where, proc.stdout.read().decode(errors="replace"))
                port_of_server = port
            elif kind == "client":
                if port_of_server is None:  # a client block of a document without its own server
                    readme_server = next(c for _, k, _, c in _blocks("README.md") if k == "server")
                    port_of_server = free_port()
                    servers.append(subprocess.Popen([sys.executable, "-c", readme_server.replace("9000", str(port_of_server))],
                                                    cwd=str(tmp_path), env=_run_env(), stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL))
                    wait_for(lambda: port_open(port_of_server), timeout=30, message="the README's server")
                code = code.replace("9000", str(port_of_server))
                done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=_run_env(),
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, "%s failed:\n%s%s" % (where, done.stdout, done.stderr)
                assert options.get("expect", "") in done.stdout, "%s printed %r" % (where, done.stdout)
            else:  # script, import
                started = time.monotonic()
                done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=_run_env(),
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, "%s failed:\n%s%s" % (where, done.stdout, done.stderr)
                assert time.monotonic() - started < 60
    finally:
        for proc in servers:
            terminate_process(proc)
