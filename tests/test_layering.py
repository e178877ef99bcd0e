"""The import graph of the whole package follows the layering table of docs/ARCHITECTURE.md ('Layering').

Every module is parsed with `ast` (imports inside functions count too); an import of another part of the
package must be allowed by the importing part's row, or by the row of the module itself.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lumiere_jax"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def layering_table(text: str) -> dict[str, set[str]]:
    """`{part: parts it may import}` from the table under the '## Layering' heading."""
    section = text.split("## Layering", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not re.fullmatch(r"`[\w.]+`", cells[0]):
            continue
        table[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return table


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_parts(path: pathlib.Path, name: str) -> dict[str, str]:
    """`{part of lumiere_jax: first imported module}` for every import of the package in the module at `path`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] == "lumiere_jax" and len(parts) > 1:
                found.setdefault(parts[1], target)
    return found


def violations(table: dict[str, set[str]]) -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name == "lumiere_jax":
            continue
        dotted = name.split(".", 1)[1]
        part = dotted.split(".")[0]
        if part not in table:
            problems.append(f"{name}: its part {part!r} has no row in the layering table")
            continue
        allowed = {part} | set().union(*(table[row] for row in table if dotted == row or dotted.startswith(row + ".")))
        for target_part, target in sorted(imported_parts(path, name).items()):
            if target_part not in allowed:
                problems.append(f"{name} imports {target}: {part} may import only {sorted(allowed - {part})}")
    return problems


def test_every_import_follows_the_documented_layering():
    table = layering_table(ARCHITECTURE.read_text())
    assert table, "no layering table found under '## Layering' in docs/ARCHITECTURE.md"
    problems = violations(table)
    assert not problems, "imports against docs/ARCHITECTURE.md 'Layering':\n" + "\n".join(problems)


def test_sampling_export_and_evaluation_sit_beside_the_trainer():
    table = layering_table(ARCHITECTURE.read_text())
    side_by_side = ("train", "sample", "export", "evaluate")
    for row, allowed in table.items():
        part = row.split(".")[0]
        if part in side_by_side:
            assert "train" not in allowed - {part}, f"{row} may import train"
        if part == "train":
            assert not allowed & {"sample", "export", "evaluate"}, f"{row} may import {allowed}"
    lower = ("storage", "faults", "parallel", "diffusion", "models", "data", "stages")
    for row, allowed in table.items():
        if row.split(".")[0] in lower:
            assert not allowed & set(side_by_side), f"{row} (a lower layer) may import {allowed}"
