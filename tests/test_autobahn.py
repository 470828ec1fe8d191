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
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from faultkit import record
from support import free_port, port_open, repo_root, terminate_process, wait_for

#: Every case of sections 1-7, 9 and 10, and of 12 and 13 (permessage-deflate, messages up to
#: 256 KiB). Section 12-13's big cases take most of the time, bound by the suite's own Python 2
#: process: the two directions run side by side (one core each).
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"]
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
#: Seconds one direction may take: about 11 minutes each, side by side, on 2 quiet cores; a
#: machine busy with other work has been seen to need 30 (a bound, never a figure).
RUN_TIMEOUT = 2400


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


def _package_env():
    return dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _start_fuzzingclient(command, workdir):
    """Our echo server, then the suite's client against it: (driver process, helper process)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(repo_root(), "tests", "autobahn_echo.py"), str(port), "deflate"],
                              env=_package_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), timeout=20, message="the echo server")
    spec = {"outdir": str(workdir / "reports"), "servers": [{"agent": "crossws", "url": "ws://127.0.0.1:%d" % port}],
            "cases": CASES, "exclude-cases": [], "exclude-agent-cases": {}}
    (workdir / "spec.json").write_text(json.dumps(spec))
    with open(str(workdir / "output.txt"), "w") as output:
        suite = subprocess.Popen(command + ["-m", "fuzzingclient", "-s", str(workdir / "spec.json")], cwd=str(workdir),
                                 stdout=output, stderr=subprocess.STDOUT)
    return suite, server


def _start_fuzzingserver(command, workdir):
    """The suite's server, then our Python client against it: (driver process, helper process)."""
    port = free_port()
    spec = {"url": "ws://127.0.0.1:%d" % port, "outdir": str(workdir / "reports"), "cases": CASES,
            "exclude-cases": [], "exclude-agent-cases": {}}
    (workdir / "spec.json").write_text(json.dumps(spec))
    suite = subprocess.Popen(command + ["-m", "fuzzingserver", "-s", str(workdir / "spec.json")], cwd=str(workdir),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), timeout=30, message="the fuzzing server")
    with open(str(workdir / "output.txt"), "w") as output:
        client = subprocess.Popen([sys.executable, os.path.join(repo_root(), "tests", "autobahn_client.py"),
                                   "ws://127.0.0.1:%d" % port], env=_package_env(), stdout=output, stderr=subprocess.STDOUT)
    return client, suite


class Runs:
    """Both directions, started together: ``tests/conftest.py`` starts them when the session's
    tests are collected (they take ~13 minutes, bound by the suite's own Python 2 processes, while
    the rest of the suite mostly waits on sockets) and runs this module's checks last."""

    def __init__(self):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="crossws-autobahn-"))
        self.started = {}
        self.outcome = None
        self.error = None
        try:
            command = wstest_command()
            for name, start in (("fuzzingclient", _start_fuzzingclient), ("fuzzingserver", _start_fuzzingserver)):
                (self.root / name).mkdir()
                self.started[name] = start(command, self.root / name)
        except BaseException as exc:  # reported by the tests, which must fail, never skip
            self.error = exc
            self.stop()

    def wait(self):
        """{direction: (return code, output tail, work dir)} once both drivers ended."""
        if self.error is not None:
            raise self.error
        if self.outcome is None:
            self.outcome = {}
            for name, (driver, _) in self.started.items():
                try:
                    driver.wait(timeout=RUN_TIMEOUT)
                    output = (self.root / name / "output.txt").read_text(errors="replace")
                except subprocess.TimeoutExpired:
                    output = "timed out after %ds" % RUN_TIMEOUT
                self.outcome[name] = (driver.returncode, output[-3000:], self.root / name)
            self.stop()
        return self.outcome

    def stop(self):
        for driver, helper in self.started.values():
            terminate_process(driver)
            terminate_process(helper)


_runs = None


def start_runs():
    """Start both directions in the background (once per session)."""
    global _runs
    if _runs is None:
        _runs = Runs()
    return _runs


def stop_runs():
    if _runs is not None:
        _runs.stop()
        if _runs.outcome is not None and all(code == 0 for code, _, _ in _runs.outcome.values()):
            shutil.rmtree(str(_runs.root), ignore_errors=True)


@pytest.fixture(scope="module")
def autobahn():
    return start_runs().wait()


@pytest.mark.timeout(2 * RUN_TIMEOUT + 120)
def test_the_server_passes_autobahn_fuzzingclient(autobahn):
    returncode, output, workdir = autobahn["fuzzingclient"]
    assert returncode == 0, output
    _check(workdir, "autobahn_fuzzingclient")


@pytest.mark.timeout(2 * RUN_TIMEOUT + 120)
def test_the_python_client_passes_autobahn_fuzzingserver(autobahn):
    returncode, output, workdir = autobahn["fuzzingserver"]
    assert returncode == 0, output
    _check(workdir, "autobahn_fuzzingserver")


def _check(workdir, name):
    """Every case of the run's report ended OK, NON-STRICT or INFORMATIONAL (and so did its close)."""
    with open(str(workdir / "reports" / "index.json")) as handle:
        results = json.load(handle)["crossws"]
    failed = sorted((case for case, r in results.items()
                     if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in ACCEPTED), key=_case_key)
    counts = collections.Counter(r["behavior"] for r in results.values())
    record(name, cases=len(results), behaviours=dict(counts),
           non_strict_cases=sorted((c for c, r in results.items() if r["behavior"] == "NON-STRICT"), key=_case_key),
           informational_cases=sorted((c for c, r in results.items() if r["behavior"] == "INFORMATIONAL"), key=_case_key))
    assert len(results) >= 517  # every case of the sections above
    assert not failed, "cases not passed: " + ", ".join(
        "%s (%s/%s)" % (case, results[case]["behavior"], results[case]["behaviorClose"]) for case in failed)
