"""The package stays clean under ``mypy --strict`` (configured in setup.cfg) and ships py.typed."""
import configparser
import os
import subprocess
import sys

from support import repo_root


def test_mypy_strict_is_the_configuration():
    config = configparser.ConfigParser()
    config.read(os.path.join(repo_root(), "setup.cfg"))
    assert config.getboolean("mypy", "strict")


def test_package_is_mypy_strict_clean():
    assert os.path.exists(os.path.join(repo_root(), "crossws_sync", "py.typed"))
    result = subprocess.run([sys.executable, "-m", "mypy", "crossws_sync", "--no-error-summary"],
                            cwd=repo_root(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
