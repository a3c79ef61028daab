"""evaluators' sub-packages import down only, in the order ``evaluators/__init__.py`` lists them
(read with the import scanner of ``tests/test_imports.py``: imports inside functions count)."""

from __future__ import annotations

from tests.test_imports import REPO, scan

ORDER = ("errors", "classification", "data", "runtime", "networks", "onnx", "recovery",
         "firmware", "scoring")
"""Each part of evaluators may import only the parts before it."""


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_every_part_of_evaluators_is_in_the_order():
    modules = [m for m in scan(REPO, ("evaluators",)).modules if m != "evaluators"]
    assert {_part(m) for m in modules} == set(ORDER)


def test_the_sub_packages_import_down_only():
    upward = [imp.describe() for imp in scan(REPO, ("evaluators",)).imports
              if imp.target != "evaluators" and not imp.type_only
              and ORDER.index(_part(imp.target)) > ORDER.index(_part(imp.importer))]
    assert not upward, "\n".join(upward)
