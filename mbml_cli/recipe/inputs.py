"""Untrusted input made safe to read and to print: recipe YAML, `--set` values, store metadata.

- `load_yaml(text)`: YAML 1.2 numbers (`1e6` and `3e-4` are floats, not strings), no aliases (an
  alias bomb expands a kilobyte into gigabytes), at most `MAX_DEPTH` levels of nesting, and a
  duplicate key is an error naming its line (YAML 1.1 lets the last one win silently);
- `read_text(path)`: a recipe file's text, refused over `MAX_BYTES` or when not UTF-8;
- `short(value)`: a value cut to a readable length for an error message;
- `clean(text)`: text from a recipe or a store, with control characters (terminal escapes, NUL)
  replaced and Rich markup escaped, ready for `console.print(..., markup=True)`.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from rich.markup import escape

MAX_BYTES = 1_000_000       # a recipe is a few kilobytes; a megabyte is already absurd
MAX_DEPTH = 32              # sections → keys → lists: a recipe needs 3 or 4 levels
SHORT = 80                  # characters of a value quoted in an error message

# YAML 1.2's float: exponent without a dot allowed (`1e6`), `.inf`, `.nan` (refused later by range checks)
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.(?:inf|Inf|INF)
                          |\.(?:nan|NaN|NAN))$""", re.X)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class InputError(ValueError):
    """Input that cannot be read; `line` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats, no aliases, bounded depth and no duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise InputError("aliases (*name) are not allowed in a recipe; write the value out", mark.line + 1)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputError(f"nested more than {MAX_DEPTH} levels deep", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue
                if duplicate:
                    raise InputError(f"duplicate key {short(key)}", key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep)


# The 1.1 float resolver misses `1e6`; ours goes first for every character a number starts with.
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _Loader.yaml_implicit_resolvers.setdefault(_first, [])
    _Loader.yaml_implicit_resolvers[_first] = [r for r in _Loader.yaml_implicit_resolvers[_first]
                                               if r[0] != "tag:yaml.org,2002:float"]
    # ints keep priority over floats (`3` stays an int); the float pattern comes right after them
    ints = [r for r in _Loader.yaml_implicit_resolvers[_first] if r[0] == "tag:yaml.org,2002:int"]
    rest = [r for r in _Loader.yaml_implicit_resolvers[_first] if r[0] != "tag:yaml.org,2002:int"]
    _Loader.yaml_implicit_resolvers[_first] = ints + [("tag:yaml.org,2002:float", _FLOAT_12)] + rest


def load_yaml(text: str):
    """Parse YAML text with the rules above. Raises InputError (with the line where known)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except InputError:
        raise
    except yaml.reader.ReaderError as e:        # a character YAML does not allow (it has no problem_mark)
        code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
        what = "a NUL byte" if code == 0 else f"the control character U+{code:04X}"
        raise InputError(f"contains {what}, which YAML does not allow", text.count("\n", 0, e.position) + 1) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = str(getattr(e, "problem", None) or type(e).__name__)
        problem = problem if len(problem) <= SHORT else problem[:SHORT - 1] + "…"
        raise InputError(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as e:
        raise InputError(f"not valid YAML: {type(e).__name__}") from None


def read_text(path: Path) -> str:
    """The text of a small UTF-8 file."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{size:,} bytes, larger than the {MAX_BYTES:,} a recipe may have")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})") from None


def short(value, limit: int = SHORT) -> str:
    """repr(value), cut to `limit` characters (a 300 MB value must not become a 300 MB message)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        text = f"<{type(value).__name__} of {len(value)} items>"
    else:
        try:
            text = repr(value)
        except RecursionError:
            text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def clean(text) -> str:
    """Printable, markup-escaped text: control characters become '?', `[` is escaped for Rich."""
    return escape(_CONTROL.sub("?", str(text)))
