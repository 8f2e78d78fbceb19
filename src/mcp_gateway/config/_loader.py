"""Loading: strict YAML (no duplicate keys), every problem at once with its path and line, the client-config hint."""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from mcp_gateway.config._checks import yaml_kind
from mcp_gateway.config._document import GatewayConfig, _cross_problems
from mcp_gateway.config._problems import ConfigError, ConfigProblem
from mcp_gateway.config._servers import ServerConfig

# libyaml's parser when PyYAML was built with it: 3x faster on a controller-sized config.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    duplicate_keys: list[tuple[str, yaml.Mark]]


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            is_duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it properly
            continue
        if is_duplicate:
            loader.duplicate_keys.append((str(key), key_node.start_mark))
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def read_yaml(text: str) -> tuple[Any, yaml.Node | None, list[ConfigProblem]]:
    """The document, its node tree (for line numbers) and the problems of the YAML itself."""
    try:
        loader = _StrictLoader(text)  # the reader rejects control characters right here
    except yaml.YAMLError as exc:
        return None, None, [_yaml_error_problem(exc, text)]
    loader.duplicate_keys = []
    try:
        node = loader.get_single_node()
        document = None if node is None else loader.construct_document(node)
    except RecursionError:
        return None, None, [ConfigProblem("", "YAML nested too deeply")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        return None, None, [ConfigProblem("", f"YAML syntax error at {where}{what}")]
    except yaml.YAMLError as exc:
        return None, None, [_yaml_error_problem(exc, text)]
    finally:
        loader.dispose()
    problems = [
        ConfigProblem("", f"duplicate key {key!r} at line {mark.line + 1}: YAML keeps only one")
        for key, mark in loader.duplicate_keys
    ]
    return document, node, problems


def _yaml_error_problem(exc: yaml.YAMLError, text: str) -> ConfigProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        # YAML forbids most control characters; say which and where, in one line.
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return ConfigProblem(
            "", f"character {exc.character:#06x} at line {line}, column {column} is not allowed in YAML"
        )
    return ConfigProblem("", "YAML error: " + " ".join(str(exc).split()))


def line_of(root: yaml.Node | None, path: str) -> int | None:
    """The line of `path` in the node tree: of the key for a mapping entry, of the item for a
    list entry; the deepest part of the path that exists (an unknown key's own line)."""
    if root is None or not path:
        return None
    node, line = root, None
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        elif name and isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if getattr(k, "value", None) == name), None)
            if entry is None:
                break
            line = entry[0].start_mark.line + 1
            node = entry[1]
        else:
            break
    return line


def _format_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _known_keys(model: type[BaseModel]) -> list[str]:
    keys = [field.alias or name for name, field in model.model_fields.items()]
    return keys + (["toolPrefix"] if model is ServerConfig else [])


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as `list[ServerConfig]` or `AuthConfig | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose key set applies at `loc` (used to suggest a fix for a typo)."""
    model: type[BaseModel] | None = GatewayConfig
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        model = None if field is None else _model_in(field.annotation)
    return model


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        model = _model_at(loc[:-1])
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(key, _known_keys(model), n=1)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        return f"unknown key{hint}"
    if kind == "missing":
        return "required"
    if kind in _EXPECTED:
        # The kind of value found, never the value: it may be a misplaced credential.
        found = error.get("input")
        message = f"expected {_EXPECTED[kind]}, got {yaml_kind(found)}"
        if kind == "string_type" and isinstance(found, bool | int | float):
            message += " (YAML reads yes/no/on/off/true/false and numbers as such: quote the value)"
        return message
    message = str(error["msg"])
    for noise in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(noise)
    return message.replace("Input should be", "must be")


_EXPECTED = {
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
    "list_type": "a list",
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
}


def _problems_from(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):  # the input is used for its type only
        loc = [part for part in item["loc"] if not _is_union_tag(part)]
        problems.append(ConfigProblem(_format_path(loc), _message({**item, "loc": loc})))
    return problems


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union member it tried (`list[str]`, `str`, `function-after[...]`)
    return isinstance(part, str) and (
        "[" in part or part in ("str", "int", "float", "bool", "none", "list")
    )


def parse_config(text: str, source: str = "<string>") -> GatewayConfig:
    """Validate a config document; raise `ConfigError` listing every problem."""
    if not text.strip():
        raise ConfigError([ConfigProblem("", "the file is empty (an empty config is `servers: []`)")], source)
    document, root, problems = read_yaml(text)
    if problems and document is None:
        if _CLIENT_JSONC_RE.match(text):  # VS Code's mcp.json has comments: not YAML
            problems = [ConfigProblem("", _CLIENT_CONFIG)]
        raise ConfigError(problems, source)
    if document is None and not problems:
        raise ConfigError([ConfigProblem("", "the file is empty (an empty config is `servers: []`)")], source)
    if not isinstance(document, Mapping):
        kind = "nothing" if document is None else type(document).__name__
        problems.append(ConfigProblem("", f"the top level must be a mapping of keys, got {kind}"))
        raise ConfigError(problems, source)
    if _is_client_config(document):
        raise ConfigError([ConfigProblem("", _CLIENT_CONFIG)], source)
    try:
        config = GatewayConfig.model_validate(document, context={"cross_checked": True})
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
        config = None
    servers = document.get("servers")
    virtual = document.get("virtualServers")
    problems.extend(
        _cross_problems(
            servers if isinstance(servers, list) else [],
            virtual if isinstance(virtual, list) else [],
        )
    )
    if problems or config is None:
        located = [replace(p, line=line_of(root, p.path)) if p.line is None else p for p in problems]
        raise ConfigError(_sorted_unique(located), source)
    return config


_CLIENT_CONFIG = (
    "this is an MCP client's config (Claude Desktop, VS Code or Cursor), not a gateway config: "
    "`mcp-gateway import FILE` converts it"
)


_CLIENT_JSONC_RE = re.compile(r'\s*(//[^\n]*\n\s*|/\*.*?\*/\s*)*\{.*"(mcpServers|servers)"\s*:\s*\{', re.DOTALL)


def _is_client_config(document: Mapping[str, Any]) -> bool:
    """`mcpServers:` (Claude Desktop, Cursor), or `servers:` as a mapping of name to entry (VS
    Code's .vscode/mcp.json, or its settings' `mcp:` section): see importer.py."""
    if isinstance(document.get("mcpServers"), Mapping):
        return True
    servers = document.get("servers")
    if isinstance(document.get("mcp"), Mapping):
        servers = document["mcp"].get("servers")
    # `servers: {name: a}` is one entry written without its `-`, not a map of entries.
    return isinstance(servers, Mapping) and all(isinstance(v, Mapping) for v in servers.values())


def _sorted_unique(problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
    def order(problem: ConfigProblem) -> tuple[Any, ...]:
        # file-level first, then by line, then by path with numeric indexes (servers[2] < [10])
        parts = re.split(r"\[(\d+)\]", problem.path)  # names at even places, indexes at odd
        line = problem.line if problem.line is not None else sys.maxsize
        return (problem.path != "", line, [int(p) if i % 2 else p for i, p in enumerate(parts)])

    return sorted(dict.fromkeys(problems), key=order)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    source = os.fspath(path)
    return parse_config(read_config_text(source), source)


def read_config_text(source: str) -> str:
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", "no such file")], source) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem("", "is a directory, not a config file")], source) from None
    except PermissionError:
        raise ConfigError([ConfigProblem("", "permission denied")], source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem("", f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})")],
            source,
        ) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read: {exc.strerror or exc}")], source) from None
    return text
