"""The layer contract: a module never imports one from a higher layer.

From the bottom: the project core (`chargeback`), identity (`accounts`), `billing`, `statements`,
`journals`, then the top: the PI portal, the operations and the project's wiring (settings, URLs,
CLI start-up). Every import counts, including those inside functions and under TYPE_CHECKING: a
lazy import is still a dependency. A module belongs to the layer of the longest prefix below.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("chargeback", "accounts", "billing", "statements", "journals")
TOP = 5

# Longest matching prefix wins.
LAYERS: dict[str, int] = {
    "chargeback": 0,
    "accounts": 1,
    "billing": 2,
    "statements": 3,
    "journals": 4,
    # The top: what puts the apps together or works across all of them.
    "accounts.portal": TOP,
    "chargeback.operations": TOP,
    "chargeback.help": TOP,  # help and system pages of the admin: they read every app
    "chargeback.management": TOP,
    "chargeback.settings": TOP,
    "chargeback.urls": TOP,
    "chargeback.wsgi": TOP,
    "chargeback.cli": TOP,
    "chargeback.startup": TOP,
    "chargeback.tasks": TOP,
}

# Upward imports not removed yet (importer, imported): each must go, none may be added.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool, root: Path) -> set[str]:
    """Every module an import statement anywhere in the source names (absolute names)."""
    found: set[str] = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from billing import views` imports the module billing.views; `from billing.models
            # import PI` imports billing.models.
            for alias in node.names:
                name = f"{target}.{alias.name}"
                found.add(name if _is_module(root, name) else target)
    return found


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.importer} (layer {layer_of(self.importer)}) imports {self.imported} (layer {layer_of(self.imported)})"


def upward_imports(root: Path) -> list[Violation]:
    found: list[Violation] = []
    for app in APPS:
        for path in sorted((root / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            module = _module_name(path, root)
            own = layer_of(module)
            assert own is not None, module
            for target in sorted(imports_of(path.read_text(), module, path.name == "__init__.py", root)):
                if target.split(".")[0] not in APPS:
                    continue
                theirs = layer_of(target)
                if theirs is not None and theirs > own:
                    found.append(Violation(module, target))
    return found


def _by_module(found: list[Violation]) -> set[tuple[str, str]]:
    return {(v.importer, v.imported) for v in found}


def test_no_module_imports_a_higher_layer() -> None:
    found = _by_module(upward_imports(ROOT))
    new = sorted(found - KNOWN_VIOLATIONS)
    assert not new, "upward imports:\n" + "\n".join(f"{a} -> {b}" for a, b in new)


def test_known_violations_are_still_there() -> None:
    """Once an upward import is gone, it leaves the list too (so it cannot come back unnoticed)."""
    gone = sorted(KNOWN_VIOLATIONS - _by_module(upward_imports(ROOT)))
    assert not gone, "remove from KNOWN_VIOLATIONS:\n" + "\n".join(f"{a} -> {b}" for a, b in gone)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for parent in path.relative_to(tmp_path).parents:
            if parent.parts:
                (tmp_path / parent / "__init__.py").touch()
    for app in APPS:
        (tmp_path / app).mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # a lazy import inside a function
        (
            {"billing/services.py": "def f():\n    from statements.selectors import x\n"},
            ("billing.services", "statements.selectors"),
        ),
        # a relative import reaching the portal from identity code
        (
            {"accounts/services.py": "from .portal import views\n", "accounts/portal/views.py": ""},
            ("accounts.services", "accounts.portal.views"),
        ),
        # the core importing an app
        ({"chargeback/money.py": "import billing.models\n"}, ("chargeback.money", "billing.models")),
        # `from app import module`
        (
            {"statements/pdf.py": "from journals import formats\n", "journals/formats.py": ""},
            ("statements.pdf", "journals.formats"),
        ),
    ],
)
def test_an_upward_import_is_caught(tmp_path: Path, files: dict[str, str], expected: tuple[str, str]) -> None:
    assert expected in _by_module(upward_imports(_tree(tmp_path, files)))


def test_downward_imports_pass(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "journals/selectors.py": "from statements.models import Statement\nfrom billing import selectors\n",
            "accounts/portal/views.py": "from journals.formats import neutralize\nfrom ..models import X\n",
            "chargeback/operations/backup.py": "from billing import services\n",
            "billing/views.py": "from chargeback.money import ZERO\nfrom accounts import roles\nfrom . import admin\n",
        },
    )
    assert upward_imports(root) == []
