"""The documented install and run commands, in clean virtual environments, as a newcomer runs them.

Each test copies the checkout, runs a command taken from the docs as written (only ports
substituted where noted) in a fresh venv with only the documented extras, and checks what the
user sees. They download from PyPI (pip's cache makes later runs faster)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from rawclient import RawClient
from support import free_port, repo_root, wait_for


def _copy_checkout(dest):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo_root(), capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        source = os.path.join(repo_root(), name)
        if os.path.isfile(source) and "node_modules" not in name:
            os.makedirs(os.path.dirname(os.path.join(dest, name)) or dest, exist_ok=True)
            shutil.copy2(source, os.path.join(dest, name))
    return dest


def _bash_block_after(path, heading):
    with open(os.path.join(repo_root(), path), encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()


def _system_python():
    # A distribution's python3 (Debian marks it externally managed: pip install refuses to run there).
    for candidate in ("/usr/bin/python3", shutil.which("python3"), sys.executable):
        if candidate and os.path.exists(candidate):
            return candidate
    raise AssertionError("no python3 found")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "VIRTUAL_ENV", "PYTHON", "CROSSWS_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "venv" not in p)
    return env


@pytest.mark.timeout(600)
def test_the_readme_demo_command_works_with_the_system_python(tmp_path):
    command = _bash_block_after("README.md", "## Try it")
    assert command.startswith("python3 -m venv .venv")
    checkout = _copy_checkout(str(tmp_path / "checkout"))
    python = _system_python()
    env = _clean_env()
    env["CROSSWS_DEMO_DEFAULT_REDIS"] = "redis://127.0.0.1:%d" % free_port()  # no Redis there: it starts its own
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(python, str(bindir / "python3"))  # `python3` in the command is that Python
    env["PATH"] = str(bindir) + os.pathsep + env["PATH"]
    proc = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "nodes ready" in line:
                break
        output = "".join(lines)
        assert "nodes ready" in output, output[-3000:]
        assert "externally-managed" not in output
        urls = re.findall(r"(http://127\.0\.0\.1:(\d+)/)", "".join(proc.stdout.readline() for _ in range(3)))
        assert len(urls) == 3
        client = RawClient(int(urls[0][1]), "/ws?name=newcomer")
        client.close()
    finally:
        _stop_group(proc, signal.SIGINT)


@pytest.mark.timeout(600)
def test_the_documented_gunicorn_command_in_a_venv_with_only_the_documented_extras(tmp_path):
    command = _bash_block_after("docs/guide.md", "### gunicorn").replace("\\\n", " ")
    checkout = _copy_checkout(str(tmp_path / "checkout"))
    env = _clean_env()
    subprocess.run([_system_python(), "-m", "venv", ".venv"], cwd=checkout, env=env, check=True, timeout=120)
    pip = subprocess.run([".venv/bin/python", "-m", "pip", "install", "-q", "-e", ".[flask,gunicorn]"], cwd=checkout,
                         env=env, capture_output=True, text=True, timeout=480)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    port = free_port()
    command = command.replace("127.0.0.1:8000", "127.0.0.1:%d" % port)
    env["PATH"] = os.path.join(checkout, ".venv", "bin") + os.pathsep + env["PATH"]
    proc = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: _http_ok(port) or proc.poll() is not None, timeout=60, message="gunicorn to serve")
        assert proc.poll() is None, proc.stdout.read()
        client = RawClient(port, "/ws?id=newcomer")
        client.send_json({"event": "whoami", "payload": {}, "callbackId": "w"})
        assert client.recv_json(timeout=10)["callbackId"] == "w"
        client.close()
    finally:
        _stop_group(proc, signal.SIGTERM)
    output = proc.stdout.read()
    assert "MonkeyPatchWarning" not in output and "No module named" not in output, output[-3000:]


def _stop_group(proc, sig):
    """Stop the command's whole process group (it started servers), politely then for good."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _http_ok(port):
    import urllib.request

    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
