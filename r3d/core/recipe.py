"""YAML recipes → typed, validated pydantic configs.

A recipe is a YAML mapping validated against a pydantic schema whose models forbid extra keys.
Features:

- ``extends: other.yaml`` (path relative to the recipe) inherits another recipe; mappings merge
  deeply, the child wins, lists are replaced.
- ``--set a.b=c`` overrides: the value is parsed as YAML, so ``3`` is an int, ``1e-4`` a float,
  ``true`` a bool, ``[1, 2]`` a list and ``null`` None.
- Unknown or misspelled keys fail with one line naming the key and the nearest valid one.
- :func:`save_resolved` writes the fully resolved recipe next to a run.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from r3d.core.errors import R3DError, did_you_mean
from r3d.core.io import read_text

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# YAML 1.1 (PyYAML) reads "1e-4" as a string; accept the forms people actually write as floats.
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _parse_scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    return value


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4 style numbers as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, a syntax error or a non-mapping raises R3DError."""
    path = Path(path)
    if not path.is_file():
        raise R3DError(f"recipe not found: {path}")
    text = read_text(path, "recipe")
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise R3DError(f"YAML syntax error in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise R3DError(f"recipe {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def shipped_recipes_dir() -> Path:
    """r3d's own recipes: the repository's recipes/ folder in a source checkout or editable install,
    else ``<prefix>/share/r3d/recipes`` where a wheel installs them (pyproject's data-files)."""
    source = Path(__file__).resolve().parents[2] / "recipes"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "r3d" / "recipes"


SHIPPED_RECIPES = shipped_recipes_dir()


def locate_recipe(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the shipped recipe of that name (``recipes/tiny_mesh.yaml`` works
    from any folder); a recipe found nowhere raises R3DError listing the shipped ones."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    shipped = SHIPPED_RECIPES / path.name
    if path.suffix in (".yaml", ".yml") and shipped.is_file():
        return shipped
    names = sorted(p.name for p in SHIPPED_RECIPES.glob("*.yaml")) if SHIPPED_RECIPES.is_dir() else []
    known = f"; shipped recipes: {', '.join(names)}" if names else ""
    raise R3DError(f"recipe not found: {path}{did_you_mean(path.name, names)}{known}")


def resolve_extends(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a recipe and, recursively, the recipes it ``extends:``."""
    path = (locate_recipe(path) if not _seen else Path(path)).resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise R3DError(f"recipe extends itself in a cycle: {chain}")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parents = parent if isinstance(parent, list) else [parent]
    merged: dict[str, Any] = {}
    for item in parents:
        parent_path = (path.parent / str(item)).resolve()
        if not parent_path.is_file():
            raise R3DError(f"{path.name}: extends a recipe that does not exist: {item}")
        merged = deep_merge(merged, resolve_extends(parent_path, (*_seen, path)))
    return deep_merge(merged, data)


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars / flow lists)."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise R3DError(f"--set expects key.path=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise R3DError(f"--set has an empty key: {item!r}")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise R3DError(f"--set {key}: {part} is not a section")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = _parse_scalar(raw)
    return data


def _fields_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model reached by following ``loc`` from ``schema`` (best effort)."""
    model: Any = schema
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = _model_of(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as ``Foo | None`` or ``dict[str, Foo]`` (values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, schema: type[BaseModel], source: str) -> str:
    """One line describing the first problem, with a did-you-mean for unknown keys."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = _fields_at(schema, loc[:-1])
        prefix = "".join(f"{p}." for p in loc[:-1])
        suggestion = did_you_mean(str(loc[-1]), valid, cutoff=0.5).replace("'", f"'{prefix}", 1)
        if not suggestion and valid:
            suggestion = f"; valid keys here: {', '.join(valid)}"
        return f"{source}: unknown key '{dotted}'{suggestion}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{dotted}'"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: '{dotted}' = {shown}: {err['msg']}{more}"


def validate(data: dict[str, Any], schema: type[T], source: str = "recipe") -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise R3DError(format_validation_error(exc, schema, source)) from None


def load_recipe(path: str | os.PathLike, schema: type[T], overrides: list[str] | None = None) -> T:
    """Read ``path`` (following ``extends:``), apply ``--set`` overrides and validate into ``schema``."""
    data = apply_overrides(resolve_extends(path), overrides)
    return validate(data, schema, source=Path(path).name)


def save_resolved(config: BaseModel, path: str | os.PathLike) -> Path:
    """Write the resolved recipe (every default filled in) as YAML, atomically."""
    from r3d.core.io import atomic_write_text

    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return atomic_write_text(path, text)
