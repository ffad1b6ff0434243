"""The package's shape: every module imports, no import cycles, no private names reached
across modules, no sys.path edits outside this folder's conftest.py."""

import ast
import os
import pathlib
import re
import subprocess
import sys

from conftest import ROOT

PACKAGE = pathlib.Path(ROOT) / "echokld"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: pathlib.Path) -> list[tuple[str, str | None]]:
  """(module, imported name or None) of every echokld import, lazy ones inside functions too."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("echokld"):
      found += [(node.module, alias.name) for alias in node.names]
    elif isinstance(node, ast.Import):
      found += [(alias.name, None) for alias in node.names if alias.name.startswith("echokld")]
  return found


def test_every_module_imports_in_a_fresh_interpreter():
  code = "import importlib, sys\nfor m in sys.argv[1:]:\n  importlib.import_module(m)\n"
  done = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True,
                        text=True, timeout=300, cwd=os.path.dirname(ROOT))
  assert done.returncode == 0, done.stderr[-2000:]


def test_no_import_cycles():
  graph = {}
  for name, path in MODULES.items():
    deps = set()
    for module, imported in imports_of(path):
      for dep in (module, f"{module}.{imported}"):
        if dep in MODULES and dep != name and not name.startswith(dep + "."):
          deps.add(dep)
    graph[name] = deps
  state: dict[str, int] = {}

  def visit(node, stack):
    state[node] = 1
    for dep in sorted(graph[node]):
      assert state.get(dep) != 1, "import cycle: " + " -> ".join(stack + [node, dep])
      if dep not in state:
        visit(dep, stack + [node])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  assert "echokld.train.loop" in graph and graph["echokld.train.loop"]  # The check saw edges.


def test_no_module_imports_a_private_name_of_another():
  offenders = [f"{name}: {module}.{imported}" for name, path in MODULES.items()
               for module, imported in imports_of(path)
               if imported and imported.startswith("_") and module != name]
  assert not offenders, offenders


def test_sys_path_is_edited_only_in_tests_conftest():
  edit = re.compile(r"sys\.path\.(insert|append)\(")
  edits = [str(path.relative_to(ROOT)) for folder in ("echokld", "experiments", "tests")
           for path in sorted((pathlib.Path(ROOT) / folder).rglob("*.py"))
           if path.name != "conftest.py" and edit.search(path.read_text())]
  assert not edits, edits
