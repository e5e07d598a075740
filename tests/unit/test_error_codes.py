"""Every error code the code base can raise is in the one tree drawn in ``assistant/errors.py``,
under the class that raises it, and the README's list of codes is that tree."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from assistant import errors

ROOT = Path(__file__).resolve().parents[2]


def _raised_codes() -> dict[tuple[str, str], list[str]]:
    """(error class, code) -> where: every ``SomeError(..., code=...)`` in assistant/ and adapters/,
    a code given as a string or as a module-level constant."""
    found: dict[tuple[str, str], list[str]] = {}
    for folder in ("assistant", "adapters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            constants = {
                target.id: node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                if not node.func.id.endswith("Error") or node.func.id == "WireError":
                    continue
                for keyword in node.keywords:
                    if keyword.arg != "code":
                        continue
                    value = keyword.value
                    if isinstance(value, ast.Constant):
                        code = value.value
                    elif isinstance(value, ast.Name) and value.id in constants:
                        code = constants[value.id]
                    else:
                        code = f"<not a constant: {ast.unparse(value)}>"
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.setdefault((node.func.id, code), []).append(where)
    return found


def _error_classes() -> dict[str, type[errors.AssistantError]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AssistantError)
    }


def test_the_scan_finds_codes_raised_with_a_string_and_with_a_constant():
    raised = _raised_codes()
    assert ("InvalidRequestError", "event_too_large") in raised  # code="..."
    assert ("InvalidRequestError", "invalid_image") in raised  # code=INVALID_IMAGE
    assert len(raised) > 20


def test_every_raised_code_is_in_the_tree_under_the_class_that_raises_it():
    tree = errors.documented_codes()
    missing = [
        f"{cls}(code={code!r}) at {', '.join(where)}"
        for (cls, code), where in sorted(_raised_codes().items())
        if code not in tree.get(cls, [])
    ]
    assert not missing, "codes raised but not in the tree of assistant/errors.py:\n" + "\n".join(
        missing
    )


def test_the_tree_has_every_error_class_with_its_default_code_first():
    tree = errors.documented_codes()
    classes = _error_classes()
    assert set(tree) == set(classes), set(tree) ^ set(classes)
    for name, cls in classes.items():
        assert tree[name][0] == cls.code, (name, tree[name], cls.code)


def test_the_tree_draws_each_class_under_its_parent_with_its_type():
    doc = errors.__doc__ or ""
    for name, cls in _error_classes().items():
        line = next(line for line in doc.splitlines() if re.search(rf"\b{name}\b", line))
        declared = re.search(r"\[(\w+)\]", line)
        if declared:  # a class that sets its own type names it; the others inherit theirs
            assert declared.group(1) == cls.type, (name, line)
        else:
            assert cls.type == cls.__mro__[1].type, (name, line)


def test_a_code_belongs_to_one_class():
    seen: dict[str, str] = {}
    for name, codes in errors.documented_codes().items():
        for code in codes:
            # the root's default is also the server errors' default
            if code in seen and {seen[code], name} != {"AssistantError", "ServerError"}:
                pytest.fail(f"{code!r} is listed under {seen[code]} and {name}")
            seen[code] = name


def test_the_readme_lists_the_codes_of_the_tree():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- error-codes: python -m assistant.errors -->", "<!-- /error-codes -->"
    assert start in readme and end in readme, "the README's table of error codes is missing"
    table = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == errors.codes_markdown(), "regenerate it: python -m assistant.errors README.md"
