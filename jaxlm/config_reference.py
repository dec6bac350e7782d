"""The config-key reference, docs/config.md, generated from the schemas in jaxlm/config.py.

Every key of `RunConfig` (`section.key`) with its type, default and meaning. The meaning is read
from the source: the `# comment` trailing the field, after any comment lines directly above it;
a section's text is its class docstring. Nothing is written by hand, so the reference cannot
drift from the schema; a field without a comment is an error, so a new key must be documented.

    python -m jaxlm.config_reference           # (re)write docs/config.md
    python -m jaxlm.config_reference --check   # exit 1 if docs/config.md is stale
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import pathlib
import sys
import textwrap
import tokenize
from typing import Any, Optional, Sequence

import yaml

from jaxlm import config as config_lib

DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "config.md"
COMMAND = "python -m jaxlm.config_reference"


@dataclasses.dataclass(frozen=True)
class Key:
    name: str  # section.key
    type: str  # the annotation as written
    default: str  # as it would be written in YAML / an override
    meaning: str  # from the source comments; "" when there are none


@dataclasses.dataclass(frozen=True)
class Section:
    name: str  # the RunConfig field: model, data, ...
    cls: str  # the schema class name
    doc: str  # the class docstring
    keys: tuple[Key, ...]


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text without '#', whether the line holds only the comment)."""
    out: dict[int, tuple[str, bool]] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            alone = not lines[row - 1][:col].strip()
            out[row] = (tok.string.lstrip("#").strip(), alone)
    return out


def field_comments(source: str, class_name: str) -> dict[str, str]:
    """The meaning of each annotated field of `class_name` in `source`, from its comments: the
    comment-only lines directly above the field (no blank line between), then the comment that
    trails the field's statement. Fields without any comment map to ""."""
    tree = ast.parse(source)
    comments = _comments(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            break
    else:
        raise ValueError(f"class {class_name} not found")
    out = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above = []
        row = stmt.lineno - 1
        while row in comments and comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        trailing = [comments[r][0] for r in range(stmt.lineno, stmt.end_lineno + 1)
                    if r in comments and not comments[r][1]]
        parts = [" ".join(above)] if above else []
        parts += trailing
        out[stmt.target.id] = " — ".join(p for p in parts if p)
    return out


def format_value(value: Any) -> str:
    """A default as a user would write it in a YAML file or a `key=value` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value and value == value.strip() and yaml.safe_load(value) == value
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name} has no default")


def _annotation(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)


def sections(root: type = config_lib.RunConfig) -> list[Section]:
    """One Section per dataclass-valued field of `root` (RunConfig), in declaration order."""
    out = []
    for sf in dataclasses.fields(root):
        cls = type(_default(sf))
        if not dataclasses.is_dataclass(cls):
            continue
        source = textwrap.dedent(inspect.getsource(cls))
        meanings = field_comments(source, cls.__name__)
        keys = tuple(
            Key(f"{sf.name}.{f.name}", _annotation(f), format_value(_default(f)),
                meanings.get(f.name, ""))
            for f in dataclasses.fields(cls)
        )
        doc = inspect.cleandoc(cls.__doc__) if cls.__dict__.get("__doc__") else ""
        if doc.startswith(cls.__name__ + "("):  # dataclass's generated signature: no docstring
            doc = ""
        out.append(Section(sf.name, cls.__name__, doc, keys))
    return out


def undocumented(secs: Optional[Sequence[Section]] = None) -> list[str]:
    """The keys whose field has no comment in the source."""
    return [k.name for s in (secs if secs is not None else sections()) for k in s.keys
            if not k.meaning]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(secs: Optional[Sequence[Section]] = None) -> str:
    secs = list(secs if secs is not None else sections())
    lines = [
        "<!-- Generated by `python -m jaxlm.config_reference` from jaxlm/config.py: do not edit;",
        "     change the field comments there and regenerate. -->",
        "",
        "# Config reference",
        "",
        "Every key of the run config (`jaxlm/config.py`), with its type, default and meaning.",
        "A key is set in a YAML file under its section (`model:` then `  n_layers: 6`) or on the",
        "command line as `section.key=value` (`model.n_layers=6`); command-line overrides win.",
        "Unknown keys and values of the wrong type are rejected. `null` is YAML's None.",
        "",
        "Sections: " + ", ".join(f"[`{s.name}`](#{s.name})" for s in secs) + ".",
    ]
    for s in secs:
        lines += ["", f"## {s.name}", "", f"`{s.cls}`" + (f": {s.doc}" if s.doc else "."), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for k in s.keys:
            lines.append(f"| `{k.name}` | `{_cell(k.type)}` | `{_cell(k.default)}` | "
                         f"{_cell(k.meaning)} |")
    return "\n".join(lines) + "\n"


def _shown(path: pathlib.Path) -> str:
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 if the file differs from what would be written")
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT,
                        help="the reference file (default: docs/config.md in the repository)")
    args = parser.parse_args(argv)
    secs = sections()
    missing = undocumented(secs)
    if missing:
        print(f"{COMMAND}: config keys without a description (add a trailing # comment to the "
              f"field in jaxlm/config.py): {', '.join(missing)}", file=sys.stderr)
        return 1
    text = render(secs)
    out: pathlib.Path = args.output
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            state = "is missing" if current is None else "is stale"
            print(f"{COMMAND}: {_shown(out)} {state}: regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {_shown(out)} ({sum(len(s.keys) for s in secs)} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
