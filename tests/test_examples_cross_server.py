"""The original README's second example run as real processes: five cserver.py and one sender.py."""
import os
import subprocess
import sys

from support import repo_root, terminate_process, wait_for

EXAMPLE_DIR = os.path.join(repo_root(), "examples", "cross_server")


def test_five_servers_and_the_senders_three_modes(redis_server, tmp_path):
    env = dict(os.environ, PYTHONPATH=repo_root(), PYTHONUNBUFFERED="1")
    servers = []
    logs = {}
    try:
        for letter in "ABCDE":
            name = "server" + letter
            logs[name] = tmp_path / (name + ".log")
            with open(logs[name], "w") as out:
                servers.append(subprocess.Popen(
                    [sys.executable, os.path.join(EXAMPLE_DIR, "cserver.py"), "--name=" + name, "--redis=" + redis_server.url],
                    stdout=out, stderr=subprocess.STDOUT, env=env))
        wait_for(lambda: all("'type': 'publisher'" in logs[n].read_text() for n in logs), timeout=30,
                 message="five servers connected to Redis")
        sender = subprocess.run(
            [sys.executable, os.path.join(EXAMPLE_DIR, "sender.py"), "--redis=" + redis_server.url, "--scale=0.2", "--exit"],
            capture_output=True, text=True, env=env, timeout=60)
    finally:
        for server in servers:
            terminate_process(server)
    out = sender.stdout
    assert sender.returncode == 0, out + sender.stderr
    assert out.count('Received "say" event from another server:') == 3  # local-first on the sender itself
    assert "Number of servers yet to respond: 0" in out
    assert "All expected nodes responded:" in out and "'senderA'" in out.split("All expected nodes responded:")[1]
    for name, log in logs.items():
        text = log.read_text()
        assert text.count('Received "say" event from another server:') == 3, (name, text)
        assert "Hi everyone, I am senderA, please respond with your callback for the promise." in text
