"""Every exception class of the package lives in vlprompt/errors.py (the bottom layer), so that
no module imports upward to raise an error."""

import ast
import inspect
from pathlib import Path

import vlprompt
import vlprompt.errors as errors

PACKAGE = Path(vlprompt.__file__).parent


def _exception_classes(tree: ast.AST) -> list[str]:
    """Classes whose bases are named like exceptions (FooError, Exception, ...)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names = [
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            ]
            if any(n.endswith(("Error", "Exception", "Warning")) for n in names):
                found.append(node.name)
    return found


def test_no_module_but_errors_defines_an_exception_class():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        classes = _exception_classes(ast.parse(path.read_text(encoding="utf-8")))
        if classes:
            offenders[str(path.relative_to(PACKAGE))] = classes
    assert offenders == {}


def test_every_error_is_a_vlprompt_error_with_a_docstring():
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, errors.VlpromptError), cls
        assert cls.__doc__ and cls.__doc__.strip(), cls


def test_old_import_paths_still_give_the_same_classes():
    from vlprompt.config import ConfigError, RunError, TrainingDivergedError
    from vlprompt.methods.rpo import RPOError
    from vlprompt.protocols import BenchError
    from vlprompt.run_folder import FolderError

    assert RunError is errors.RunError and ConfigError is errors.ConfigError
    assert TrainingDivergedError is errors.TrainingDivergedError
    assert BenchError is errors.BenchError and FolderError is errors.FolderError
    assert RPOError is errors.RPOError


def test_the_package_imports_its_errors_from_errors_py():
    """A low layer (engine, schedule, ...) that took RunError from config.py imported upward."""
    names = {
        n for n, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    }
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vlprompt"):
                if node.module != "vlprompt.errors":
                    upward += [(path.name, a.name) for a in node.names if a.name in names]
    assert upward == []
