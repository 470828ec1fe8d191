"""The package stays mypy-clean (STYLE: type-annotate everything; ship py.typed)."""
import os
import subprocess
import sys

from support import repo_root


def test_package_is_mypy_clean():
    assert os.path.exists(os.path.join(repo_root(), "crossws_sync", "py.typed"))
    result = subprocess.run([sys.executable, "-m", "mypy", "crossws_sync", "--ignore-missing-imports",
                             "--no-error-summary", "--cache-dir", os.path.join(repo_root(), ".mypy_cache")],
                            cwd=repo_root(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
