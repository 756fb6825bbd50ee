"""Reading a config file: parse, resolve secrets, validate, cross-check.

Every problem in the file is collected into one ConfigError, so an operator
can fix them all in one pass.
"""

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.config.checks import DEFER_CROSS_CHECKS_CONTEXT_KEY, find_cross_check_errors
from router.config.errors import ConfigError, format_validation_errors, kind_of
from router.config.models import Config
from router.config.secrets import CONFIG_DIR_CONTEXT_KEY

CONFIG_FILE_MAX_BYTES = 16 * 1024 * 1024
"""Larger files are rejected. A phone number takes a few hundred bytes of YAML,
so this leaves room for tens of thousands of them."""

ALIAS_EXPANSION_MAX_VALUES = 1_000_000
"""Maximum number of values that YAML aliases may add to a file's parsed tree.

PyYAML shares an aliased object, but validation walks every copy, so nine
nested levels of nine aliases in a few hundred bytes would take minutes and
gigabytes. A config that reuses one server block in each of 50,000 numbers
adds about 500,000 values."""


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate a YAML or JSON config file.

    Raises ConfigError listing every problem found, each as "path: message".
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            content = file.read(CONFIG_FILE_MAX_BYTES + 1)
        text = content.decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            [f"cannot read config file {path}: {exc.strerror or exc}"]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"config file {path} is not valid UTF-8 (byte offset {exc.start})"]
        ) from None

    if len(content) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError(
            [f"config file {path} is larger than {CONFIG_FILE_MAX_BYTES} bytes"]
        )
    return parse_config(text, config_dir=path.parent)


def parse_config(text: str, config_dir: str | os.PathLike[str]) -> Config:
    """Validate config text; {file: PATH} secrets are relative to config_dir.

    Raises ConfigError listing every problem found.
    """
    try:
        data, errors = _parse_document(text)
    except RecursionError:
        raise ConfigError(["the config file is nested too deeply"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_describe_yaml_error(exc)]) from None
    if data is None:
        raise ConfigError(errors or ["the config file is empty"])
    if not isinstance(data, Mapping):
        raise ConfigError(
            errors
            + [
                "the top level of the config file must be a mapping of"
                f" router, org, credentials and phoneNumbers, not {kind_of(data)}"
            ]
        )

    config = None
    context = {
        CONFIG_DIR_CONTEXT_KEY: Path(config_dir),
        DEFER_CROSS_CHECKS_CONTEXT_KEY: True,
    }
    try:
        # The file uses the API's camelCase names only; snake_case field
        # names are for code that builds models directly.
        config = Config.model_validate(
            data, context=context, by_alias=True, by_name=False
        )
    except ValidationError as exc:
        errors += format_validation_errors(exc, Config)

    # The cross-checks read the parsed data, so they run even when
    # validation failed somewhere else in the file.
    errors += find_cross_check_errors(data)
    if errors or config is None:
        raise ConfigError(sorted(errors, key=_document_order))
    return config


_TOP_LEVEL_KEYS = ("router", "org", "credentials", "phoneNumbers")
_PATH_START = re.compile(r"^(\w+)(?:\[(\d+)\])?[.:\[]")


def _document_order(error: str) -> tuple[int, int]:
    """Sort key that groups errors by top-level section and list item.

    The sort is stable, so errors of one item keep their order. Errors
    without a path, such as duplicate keys, come first.
    """
    match = _PATH_START.match(error)
    if match is None or match[1] not in _TOP_LEVEL_KEYS:
        return (-1, 0)
    return (_TOP_LEVEL_KEYS.index(match[1]), int(match[2] or 0))


def _parse_document(text: str) -> tuple[Any, list[str]]:
    """Parse JSON or YAML; return the data and the duplicate-key errors.

    JSON goes to the JSON parser first because YAML rejects the tab
    indentation that JSON allows. A document that is neither raises
    ConfigError with the position of the syntax error.
    """
    if text.lstrip().startswith(("{", "[")):
        json_errors: list[str] = []
        try:
            data = json.loads(
                text, object_pairs_hook=lambda pairs: _json_object(pairs, json_errors)
            )
        except json.JSONDecodeError as exc:
            json_error = (
                f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            )
        else:
            return data, json_errors

        # Flow-style YAML also starts with a brace, so try YAML before
        # reporting the JSON syntax error.
        try:
            return _parse_yaml(text)
        except ConfigError:
            raise ConfigError([json_error]) from None

    return _parse_yaml(text)


def _json_object(pairs: list[tuple[str, Any]], errors: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            errors.append(f"duplicate key {key!r} in a JSON object; keep one")
        result[key] = value
    return result


def _parse_yaml(text: str) -> tuple[Any, list[str]]:
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, loader.duplicate_key_errors
        if _values_added_by_aliases(node) > ALIAS_EXPANSION_MAX_VALUES:
            raise ConfigError(
                [
                    "the config file expands to more than"
                    f" {ALIAS_EXPANSION_MAX_VALUES} extra values through YAML"
                    " aliases; write the repeated parts out or nest fewer aliases"
                ]
            )
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_error_message(exc)]) from None
    except (yaml.YAMLError, ValueError) as exc:
        # A ValueError comes from an explicit tag, such as !!int on a
        # value that is not an integer.
        raise ConfigError([f"invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    return data, loader.duplicate_key_errors


def _values_added_by_aliases(root: yaml.Node) -> int:
    """Count the values that aliases add when the node graph is expanded.

    Each node's expanded size is computed once, so the count takes time in
    proportion to the number of distinct nodes. Sizes stop at 2**62, far
    above the limit plus any file's node count, to keep the integers small.
    A recursive alias expands without end, so it counts as over the limit.
    """
    cap = 2**62
    expanded: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack[-1]
        key = id(node)
        if key in expanded:
            stack.pop()
            continue
        children = _child_nodes(node)
        if key not in in_progress:
            in_progress.add(key)
            for child in children:
                if id(child) in in_progress:
                    return cap
                if id(child) not in expanded:
                    stack.append(child)
            continue
        stack.pop()
        in_progress.discard(key)
        expanded[key] = min(cap, 1 + sum(expanded[id(child)] for child in children))
    return max(0, expanded[id(root)] - len(expanded))


def _child_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_error_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = exc.problem or exc.context or "syntax error"
    return f"invalid YAML{where}: {problem}"


class _ConfigLoader(yaml.SafeLoader):
    """A safe YAML loader that types plain scalars as YAML 1.2 does.

    PyYAML follows YAML 1.1, which reads `on` and `no` as booleans (so the
    hook key `on:` would be lost), `0123` as octal and `+14155550100` as
    the integer 14155550100. This loader reads only true/false as booleans,
    only decimals without a '+' or a leading zero as integers, and leaves
    timestamps and sexagesimals as strings. It also records duplicate keys,
    which PyYAML silently overwrites.
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_key_errors: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        first_lines: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue

            line = key_node.start_mark.line + 1
            if key_node.value in first_lines:
                self.duplicate_key_errors.append(
                    f"duplicate key {key_node.value!r} at line {line},"
                    f" first used at line {first_lines[key_node.value]}; keep one"
                )
            else:
                first_lines[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


_MERGE = "tag:yaml.org,2002:merge"

_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null",
    re.compile(r"^(?:~|null|Null|NULL|)$"),
    ["~", "n", "N", ""],
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    # Longer digit strings, such as a tech prefix, stay strings: no field
    # takes an integer that large, and int() rejects past 4300 digits.
    re.compile(r"^-?(?:0|[1-9][0-9]{0,17})$"),
    list("-0123456789"),
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^-?(?:0|[1-9][0-9]{0,17})"
        r"(?:\.[0-9]+(?:[eE][-+]?[0-9]{1,3})?|[eE][-+]?[0-9]{1,3})$"
    ),
    list("-0123456789"),
)
_ConfigLoader.add_implicit_resolver(_MERGE, re.compile(r"^<<$"), ["<"])


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """Describe a YAML error by its position only, never the file's text."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
    position = getattr(exc, "position", None)
    if mark is not None:
        return (
            f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}:"
            f" {problem or 'syntax error'}"
        )
    if position is not None:
        return f"invalid YAML at character {position}: {problem or 'unreadable text'}"
    return "invalid YAML: the file cannot be read"
