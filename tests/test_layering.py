"""Guard test: the pure core stays free of gevent/redis/socket, and the public API stays complete.

The pure modules are checked twice: statically (their ``import`` statements, parsed with ``ast``)
and dynamically (each is imported in a fresh interpreter, without the package ``__init__``, and
``sys.modules`` is inspected afterwards, which also catches indirect imports).
"""
import ast
import inspect
import json
import os
import subprocess
import sys

import pytest

import crossws_sync
from support import repo_root
from crossws_sync import errors

PACKAGE_DIR = os.path.dirname(os.path.abspath(crossws_sync.__file__))

#: Modules that must stay pure: no gevent, redis or socket (docs/index.md, code map).
PURE_MODULES = [
    "errors",
    "frames",
    "websocket",
    "handshake",
    "deflate",
    "names",
    "protocol",
    "listeners",
    "rooms",
    "request",
    "config",
    "results",
    "backoff",
    "envelope",
    "signing",
    "upgrade",
    "directory",
]
#: Pure modules that already exist: their disappearance (or a rename) must fail, not skip.
REQUIRED_PURE_MODULES = ["errors", "frames", "websocket", "handshake", "protocol", "listeners", "rooms", "request", "config", "results", "backoff",
                         "envelope", "upgrade", "directory"]
#: Top-level packages a pure module must never import, directly or indirectly.
FORBIDDEN = {"gevent", "geventwebsocket", "redis", "hiredis", "socket", "_socket", "ssl", "select", "selectors", "greenlet"}


def module_path(name):
    return os.path.join(PACKAGE_DIR, name + ".py")


def existing_pure_modules():
    return [name for name in PURE_MODULES if os.path.exists(module_path(name))]


def require_module(name):
    if not os.path.exists(module_path(name)):
        pytest.skip("crossws_sync/%s.py does not exist yet (pure module not checked)" % name)


def imported_names(tree):
    """(absolute module names, relative module names) imported anywhere in the module."""
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.module:
                    relative.add(node.module.split(".")[0])
                else:
                    relative.update(alias.name for alias in node.names)
            else:
                absolute.add(node.module)
    return absolute, relative


def parse(name):
    with open(module_path(name), encoding="utf-8") as source:
        return ast.parse(source.read(), filename=module_path(name))


def test_the_pure_modules_written_so_far_exist():
    missing = [name for name in REQUIRED_PURE_MODULES if not os.path.exists(module_path(name))]
    assert not missing, "pure modules missing or renamed: %s" % missing
    assert len(existing_pure_modules()) >= len(REQUIRED_PURE_MODULES)


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_module_imports_nothing_forbidden_statically(name):
    require_module(name)
    absolute, relative = imported_names(parse(name))
    bad = sorted(m for m in absolute if m.split(".")[0] in FORBIDDEN)
    assert not bad, "crossws_sync.%s imports %s" % (name, bad)
    # Relative imports may only reach other pure modules (no path to gevent through the package).
    impure = sorted(relative - set(PURE_MODULES))
    assert not impure, "crossws_sync.%s imports non-pure sibling modules %s" % (name, impure)


_PROBE = r"""
import importlib, json, sys, types
package = types.ModuleType("crossws_sync")
package.__path__ = [sys.argv[1]]
sys.modules["crossws_sync"] = package  # bypass __init__ (it pulls in the I/O modules on purpose)
importlib.import_module("crossws_sync." + sys.argv[2])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_module_imports_nothing_forbidden_in_a_fresh_interpreter(name):
    require_module(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, PACKAGE_DIR, name],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=os.path.dirname(PACKAGE_DIR),
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert "crossws_sync." + name in loaded  # the probe really imported it
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not bad, "importing crossws_sync.%s loads %s" % (name, bad)
    impure = sorted(
        m for m in loaded if m.startswith("crossws_sync.") and m.split(".")[1] not in PURE_MODULES
    )
    assert not impure, "importing crossws_sync.%s loads %s" % (name, impure)


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_module_never_sleeps(name):
    require_module(name)
    calls = [
        node.lineno
        for node in ast.walk(parse(name))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "sleep")
            or (isinstance(node.func, ast.Name) and node.func.id == "sleep")
        )
    ]
    assert not calls, "crossws_sync.%s sleeps at lines %s" % (name, calls)


def test_probe_detects_a_forbidden_import(tmp_path):
    """The fresh-interpreter probe is not vacuous: a module importing socket is caught."""
    (tmp_path / "impure.py").write_text("import json\nimport socket\n")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path), "impure"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "socket" in json.loads(proc.stdout)
    tree = ast.parse("import gevent.event\nfrom redis import Redis\nfrom .connection import X\n")
    absolute, relative = imported_names(tree)
    assert absolute == {"gevent.event", "redis"} and relative == {"connection"}


# Logging ---------------------------------------------------------------------------------------------


def _package_modules():
    return sorted(f[:-3] for f in os.listdir(PACKAGE_DIR) if f.endswith(".py"))


def test_library_logging_conventions():
    """Fixed logger names under ``crossws_sync``; no handlers (except NullHandler), levels or basicConfig."""
    problems = []
    for name in _package_modules():
        for node in ast.walk(parse(name)):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            attr = node.func.attr
            where = "%s.py:%d" % (name, node.lineno)
            if attr == "getLogger":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    problems.append("%s getLogger without a literal name" % where)
                elif arg.value != "crossws_sync" and not arg.value.startswith("crossws_sync."):
                    problems.append("%s logger %r outside crossws_sync" % (where, arg.value))
            elif attr in ("basicConfig", "setLevel"):
                problems.append("%s calls %s" % (where, attr))
            elif attr == "addHandler":
                handler = node.args[0] if node.args else None
                if not (
                    isinstance(handler, ast.Call)
                    and isinstance(handler.func, ast.Attribute)
                    and handler.func.attr == "NullHandler"
                ):
                    problems.append("%s adds a handler other than NullHandler" % where)
    assert not problems, problems


# Public API --------------------------------------------------------------------------------------------


def test_all_names_exist_and_are_unique():
    names = crossws_sync.__all__
    assert len(names) == len(set(names)), "duplicates in __all__"
    missing = [name for name in names if not hasattr(crossws_sync, name)]
    assert not missing, "__all__ names that do not exist: %s" % missing
    assert isinstance(crossws_sync.__version__, str) and crossws_sync.__version__


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from crossws_sync import *", namespace)
    exported = {k for k in namespace if k != "__builtins__"}
    assert exported == set(crossws_sync.__all__)


def test_every_public_class_and_function_has_a_docstring():
    undocumented = []
    for name in crossws_sync.__all__:
        obj = getattr(crossws_sync, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
            if not doc or not doc.strip():
                undocumented.append(name)
    assert not undocumented, "public names without a docstring: %s" % undocumented


def test_public_methods_of_exported_classes_have_docstrings():
    undocumented = []
    for name in crossws_sync.__all__:
        cls = getattr(crossws_sync, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException) or cls.__module__.split(".")[0] != "crossws_sync":
            continue
        for attr, value in vars(cls).items():
            if attr.startswith("_"):
                continue
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if inspect.isfunction(func) and not (func.__doc__ and func.__doc__.strip()):
                undocumented.append("%s.%s" % (name, attr))
    assert not undocumented, "public methods without a docstring: %s" % undocumented


def test_every_library_exception_derives_from_the_root_and_is_exported():
    for name in errors.__all__:
        exc = getattr(errors, name)
        assert issubclass(exc, errors.CrossWSError), name
        assert getattr(crossws_sync, name, None) is exc, "%s not exported by crossws_sync" % name
        assert name in crossws_sync.__all__, name
    # Every exception class defined in errors.py is listed in its __all__.
    defined = {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, BaseException) and o.__module__ == errors.__name__}
    assert defined == set(errors.__all__)


def test_no_builtin_is_shadowed_by_an_exported_name():
    import builtins

    shadowed = [name for name in crossws_sync.__all__ if hasattr(builtins, name)]
    assert not shadowed, shadowed


def test_importing_the_package_imports_neither_redis_nor_ssl():
    """gunicorn imports the worker class before its worker monkey-patches: nothing there may
    import redis or ssl, or every worker warns (MonkeyPatchWarning)."""
    out = subprocess.run([sys.executable, "-c", "import sys, crossws_sync; print('redis' in sys.modules, 'ssl' in sys.modules)"],
                         capture_output=True, text=True, timeout=60, cwd=repo_root())
    assert out.stdout.split() == ["False", "False"], out.stderr
    out = subprocess.run([sys.executable, "-c", "import sys, crossws_sync.gunicorn; print('redis' in sys.modules)"],
                         capture_output=True, text=True, timeout=60, cwd=repo_root())
    assert out.stdout.split() == ["False"], out.stderr
