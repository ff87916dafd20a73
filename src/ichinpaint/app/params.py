"""params.yaml for the review app: read the groups it needs, write back the `evaluate` keys.

The app is the one tool whose job is to edit params.yaml: "Save as params" must make
`dvc exp run` reproduce what was on screen and `dvc status` see the change. It goes
through ruamel.yaml's round-trip mode so comments, key order and every other group
stay as they were; only the `evaluate` keys the app controls are replaced.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ichinpaint.io import atomic_path


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long comment-bearing lines
    return yaml


def read_params(path: str | Path) -> dict[str, Any]:
    """params.yaml as plain dicts (for reading values)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found")
    data = YAML(typ="safe").load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of params groups")
    return data


def params_group(params: dict[str, Any], name: str) -> dict[str, Any]:
    group = params.get(name) or {}
    if not isinstance(group, dict):
        raise ValueError(f"params group {name!r} is not a mapping")
    return group


def _plain(value: Any) -> Any:
    # numpy scalars -> Python scalars, so YAML writes 0.5 and not a tagged object.
    return value.item() if hasattr(value, "item") else value


def save_evaluate_params(path: str | Path, values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set `values` in the `evaluate` group of params.yaml, atomically; returns {key: (old, new)}
    for the keys that changed. Other groups, other keys and comments are kept."""
    path = Path(path)
    yaml = _yaml()
    document = yaml.load(path.read_text())
    if document is None or "evaluate" not in document:
        raise ValueError(f"{path}: no `evaluate` group to update")
    group = document["evaluate"]
    changed = {}
    for key, value in values.items():
        value = _plain(value)
        old = group.get(key)
        if key not in group or old != value or type(old) is not type(value):
            changed[key] = (old, value)
        group[key] = value
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return changed
