"""RFC 6455 conformance of the server (fuzzingclient mode) and of the Python client (fuzzingserver
mode), proven by Autobahn|Testsuite.

The suite is Python 2 only. It is found in ``$AUTOBAHN_PYTHON``'s folder, else in pyenv's
Python 2.7.18 (``.ci/run`` installs ``autobahntestsuite`` there); when neither is there the test
fails with what to install, it never skips. Every case must end OK, NON-STRICT or
INFORMATIONAL, and so must its closing behaviour. The results table is in docs/protocol.md."""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys

import pytest

from faultkit import record
from support import free_port, port_open, repo_root, terminate_process, wait_for

#: Sections 12 and 13 (permessage-deflate) with messages up to 4 KiB: cases 10-18 of each group
#: send 1,000 messages of 16-128 KiB and take about 15 minutes for the whole suite (measured by
#: hand, all OK: docs/protocol.md), too long for every run.
COMPRESSION = ["%d.%d.%d" % (section, group, case) for section, groups in ((12, 5), (13, 7))
               for group in range(1, groups + 1) for case in range(1, 10)]
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"] + COMPRESSION
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def wstest_command():
    candidates = []
    if os.environ.get("AUTOBAHN_PYTHON"):
        candidates.append(os.environ["AUTOBAHN_PYTHON"])
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates.append(os.path.join(root, "versions", "2.7.18", "bin", "python"))
    candidates.append(shutil.which("python2.7") or "")
    for python in filter(None, candidates):
        wstest = os.path.join(os.path.dirname(python), "wstest")
        if os.path.isfile(python) and os.path.isfile(wstest):
            return [python, wstest]
    pytest.fail("Autobahn|Testsuite not found: it needs Python 2.7 (pyenv install 2.7.18) and "
                "`python2.7 -m pip install autobahntestsuite` (.ci/run does both steps it can); "
                "or set AUTOBAHN_PYTHON to a Python 2.7 that has it")


def _case_key(case_id):
    return [int(part) for part in case_id.split(".")]


@pytest.mark.timeout(600)
def test_the_server_passes_autobahn_fuzzingclient(tmp_path):
    command = wstest_command()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, os.path.join(repo_root(), "tests", "autobahn_echo.py"), str(port), "deflate"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), timeout=20, message="the echo server")
        spec = {"outdir": str(tmp_path / "reports"), "servers": [{"agent": "crossws", "url": "ws://127.0.0.1:%d" % port}],
                "cases": CASES, "exclude-cases": [], "exclude-agent-cases": {}}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        run = subprocess.run(command + ["-m", "fuzzingclient", "-s", str(tmp_path / "spec.json")], cwd=str(tmp_path),
                             capture_output=True, text=True, timeout=540)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    finally:
        terminate_process(server)
    _check(tmp_path, "autobahn_fuzzingclient")


@pytest.mark.timeout(900)
def test_the_python_client_passes_autobahn_fuzzingserver(tmp_path):
    command = wstest_command()
    port = free_port()
    spec = {"url": "ws://127.0.0.1:%d" % port, "outdir": str(tmp_path / "reports"), "cases": CASES,
            "exclude-cases": [], "exclude-agent-cases": {}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    server = subprocess.Popen(command + ["-m", "fuzzingserver", "-s", str(tmp_path / "spec.json")], cwd=str(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), timeout=30, message="the fuzzing server")
        env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        run = subprocess.run([sys.executable, os.path.join(repo_root(), "tests", "autobahn_client.py"),
                              "ws://127.0.0.1:%d" % port], env=env, capture_output=True, text=True, timeout=840)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    finally:
        terminate_process(server)
    _check(tmp_path, "autobahn_fuzzingserver")


def _check(tmp_path, name):
    """Every case of the run's report ended OK, NON-STRICT or INFORMATIONAL (and so did its close)."""
    with open(str(tmp_path / "reports" / "index.json")) as handle:
        results = json.load(handle)["crossws"]
    failed = sorted((case for case, r in results.items()
                     if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in ACCEPTED), key=_case_key)
    counts = collections.Counter(r["behavior"] for r in results.values())
    record(name, cases=len(results), behaviours=dict(counts),
           non_strict_cases=sorted((c for c, r in results.items() if r["behavior"] == "NON-STRICT"), key=_case_key),
           informational_cases=sorted((c for c, r in results.items() if r["behavior"] == "INFORMATIONAL"), key=_case_key))
    assert len(results) > 400
    assert not failed, "cases not passed: " + ", ".join(
        "%s (%s/%s)" % (case, results[case]["behavior"], results[case]["behaviorClose"]) for case in failed)
