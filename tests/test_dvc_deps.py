"""dvc.yaml's deps are complete: derived from the code, not trusted by hand.

For every stage `ichinpaint <name>`, the project modules that `cli.py` and
`stages/<name>.py` import, transitively (imports inside functions included), must be
listed in the stage's deps, themselves or through a folder above them; so must every
input path of its command. And every ``src/`` dep must be needed: a dep that no import
reaches is stale, and none is listed twice. The second half of the file removes deps from a copy of dvc.yaml
and checks that the checker notices.
"""

from __future__ import annotations

import ast
import copy
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "ichinpaint"
# Command options that name what a stage writes; every other path option is an input.
OUTPUT_OPTIONS = {
    "out",
    "metrics",
    "headline",
    "overlay",
    "state_dir",
    "live_dir",
    "plots",
    "gallery",
}
OUTPUT_OPTIONS |= {"submission"}
# detect's series store: a resumable cache the stage writes and reads, kept out of DVC
# (git-ignored) so a killed run resumes; not an input of the stage's result.
OUTPUT_OPTIONS |= {"work"}


def module_file(name: str) -> Path | None:
    """The file of project module `name` (a package's ``__init__.py``), None if not ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name `path` imports, anywhere in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return names


def with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def runs_code(init: Path) -> bool:
    """False for an ``__init__.py`` holding only a docstring and constant assignments."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        return True
    return False


@cache
def project_modules(root: Path) -> frozenset[Path]:
    """The project files a run of module `root` executes, by a walk over static imports."""
    seen: set[Path] = set()
    todo = [root]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            for parent in with_parents(name):
                found = module_file(parent)
                if found is not None and found not in seen:
                    todo.append(found)
    return frozenset(p for p in seen if p.name != "__init__.py" or runs_code(p))


def stage_code(cmd: str) -> list[Path]:
    match = re.match(r"\s*ichinpaint\s+([\w-]+)", cmd)
    assert match, f"stage command does not run `ichinpaint <stage>`: {cmd!r}"
    module = match.group(1).replace("-", "_")  # `export-onnx` is stages/export_onnx.py
    return [SRC / PACKAGE / "cli.py", SRC / PACKAGE / "stages" / f"{module}.py"]


def input_paths(stage: dict) -> list[str]:
    """Path-like values of the command's options that are not among the stage's outputs."""
    outputs = [
        next(iter(o)) if isinstance(o, dict) else o
        for key in ("outs", "metrics", "plots")
        for o in stage.get(key, [])
    ]
    tokens = stage["cmd"].split()
    paths = []
    for option, value in zip(tokens, tokens[1:], strict=False):
        if not option.startswith("--") or value.startswith("--"):
            continue
        if option[2:] in OUTPUT_OPTIONS or not (
            "/" in value or value.startswith("${data.raw_dir}")
        ):
            continue  # an output, or a number/name such as `--canvas ${png.canvas}`
        if any(covers(value, out) or covers(out, value) for out in outputs):
            continue
        paths.append(value)
    return paths


def covers(dep: str, path: str) -> bool:
    dep = dep.rstrip("/")
    return path == dep or path.startswith(dep + "/")


def dep_problems(stages: dict) -> dict[str, list[str]]:
    """Per stage: deps missing (imported code or command inputs) and ``src/`` deps not needed."""
    problems: dict[str, list[str]] = {}
    for name, stage in stages.items():
        deps = [str(d) for d in stage.get("deps", [])]
        code = {
            p.relative_to(REPO).as_posix()
            for root in stage_code(stage["cmd"])
            for p in project_modules(root)
        }
        found = [f"missing {p}" for p in sorted(code) if not any(covers(d, p) for d in deps)]
        found += [
            f"missing input {p}" for p in input_paths(stage) if not any(covers(d, p) for d in deps)
        ]
        found += [f"listed twice {d}" for d in sorted({d for d in deps if deps.count(d) > 1})]
        found += [
            f"not needed {d}"
            for d in deps
            if d.startswith("src/") and not any(covers(d, p) for p in code)
        ]
        if found:
            problems[name] = found
    return problems


@pytest.fixture(scope="module")
def stages() -> dict:
    """dvc.yaml's stages; a `foreach` stage is checked through its `do` template."""
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in raw.items()}


def test_every_stage_lists_the_code_it_imports_and_its_inputs(stages):
    assert dep_problems(stages) == {}


def test_the_walk_follows_lazy_and_relative_imports():
    detect = project_modules(SRC / PACKAGE / "stages" / "detect.py")
    names = {p.relative_to(SRC / PACKAGE).as_posix() for p in detect}
    # runner is imported inside run(); constants through runner; io at the top
    assert {"detection/runner.py", "constants.py", "io.py", "manifest.py"} <= names
    synth = project_modules(SRC / PACKAGE / "stages" / "synthesize.py")
    # synthetic/__init__ imports .dataset relatively
    assert SRC / PACKAGE / "synthetic" / "dataset.py" in synth
    assert SRC / PACKAGE / "__init__.py" not in synth  # docstring and __version__ only


def test_removing_any_dep_is_noticed(stages):
    for name, stage in stages.items():
        for i, dep in enumerate(stage["deps"]):
            if not (dep.startswith("src/") or dep in input_paths(stage)):
                continue  # e.g. transforms/ via ${train.transforms}, models/*.json
            changed = copy.deepcopy(stages)
            del changed[name]["deps"][i]
            problems = dep_problems(changed)
            assert list(problems) == [name], f"removing {dep} from {name} went unnoticed"
            assert any("missing" in p for p in problems[name])


def test_a_stale_or_repeated_dep_is_noticed(stages):
    changed = copy.deepcopy(stages)
    changed["filter"]["deps"].append("src/ichinpaint/training")
    assert dep_problems(changed) == {"filter": ["not needed src/ichinpaint/training"]}
    changed = copy.deepcopy(stages)
    changed["mask"]["deps"].append("src/ichinpaint/io.py")
    assert dep_problems(changed) == {"mask": ["listed twice src/ichinpaint/io.py"]}
