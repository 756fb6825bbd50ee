"""ConfigError, and the translation of pydantic errors into "path: message".

A path is written as in the file: camelCase keys joined by dots, list indexes
in brackets (`phoneNumbers[3].fallbackDestination.number`). Pydantic puts the
tag of a discriminated union into an error's location, as in
`("fallbackDestination", "number", "number")`. No file contains those tags, so
a walk over the model types finds and drops them.
"""

import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from router.logs import is_secret_key, redact_text


class ConfigError(Exception):
    """A configuration file that cannot be used, with every problem found in it.

    Each entry of `errors` is "path: message", or only a message for a problem
    with the whole file. No entry contains a secret's value: the messages
    leave out values under secret-named keys, and `redact_text` masks the
    credentials of any URL or SIP URI that a message quotes.
    """

    def __init__(self, errors: list[str]) -> None:
        errors = [redact_text(error) for error in errors]
        super().__init__("\n".join(errors))
        self.errors = errors


def format_validation_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """Return one "path: message" string per error of a model's validation."""
    formatted = []
    for error in exc.errors():
        path, annotation = _walk(model, error["loc"])
        message = _describe(error, annotation)
        formatted.append(f"{path}: {message}" if path else message)
    return formatted


def _walk(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, Any]:
    """Return the display path of an error location and the type found there."""
    path = ""
    annotation: Any = model
    for segment in loc:
        variants = _union_variants(annotation)
        if variants:
            annotation = _variant_with_tag(variants, segment)
            continue

        if isinstance(segment, int):
            path += f"[{segment}]"
        else:
            path += f".{segment}" if path else segment
        annotation = _child_type(annotation, segment)
    return path, annotation


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional around a type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _union_variants(annotation: Any) -> list[type[BaseModel]]:
    """Return the models of a union of models, or [] for any other type."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) not in (Union, types.UnionType):
        return []

    members = [_unwrap(a) for a in get_args(annotation)]
    if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
        return members
    return []


def _variant_with_tag(variants: list[type[BaseModel]], tag: int | str) -> Any:
    for variant in variants:
        for field in variant.model_fields.values():
            if get_origin(field.annotation) is Literal and tag in get_args(
                field.annotation
            ):
                return variant
    return None


def _child_type(annotation: Any, segment: int | str) -> Any:
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin is list and isinstance(segment, int):
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if segment in (name, field.alias):
                return field.annotation
    return None


def _is_secret(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    return isinstance(annotation, type) and issubclass(annotation, SecretStr)


def _describe(error: ErrorDetails, annotation: Any) -> str:
    """Return a plain message for one error, with the value unless secret.

    A value is secret when its field is a secret, or when its key or any
    key above it is named like one (an `Authorization` or `X-Api-Key`
    header value).
    """
    kind = error["type"]
    context = error.get("ctx", {})
    value = error["input"]
    secret = _is_secret(annotation) or any(map(is_secret_key, error["loc"]))
    shown = "" if secret else f", got {_show(value)}"

    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        return "unknown key; check its spelling or remove it"
    if kind == "union_tag_invalid":
        discriminator = context["discriminator"].strip("'")
        return (
            f"unknown {discriminator} {context['tag']!r};"
            f" expected one of {context['expected_tags']}"
        )
    if kind == "union_tag_not_found":
        discriminator = context["discriminator"].strip("'")
        tags = _tags(annotation, discriminator)
        return f"missing required field {discriminator!r}{tags}"
    if kind == "literal_error":
        return f"invalid value {_show(value)}; expected {context['expected']}"
    if kind in ("value_error", "assertion_error"):
        return str(context["error"])
    if kind in _TYPE_NAMES:
        got = _show(value) if shown and isinstance(value, str) else kind_of(value)
        if secret:
            got = kind_of(value, with_value=False)
        if kind == "string_type" and _is_number(value):
            got += "; put it in quotes"
        return f"must be {_TYPE_NAMES[kind]}, got {got}"
    if kind in _RANGE_WORDS:
        word, key = _RANGE_WORDS[kind]
        return f"must be {word} {_show_number(context[key])}{shown}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return _describe_length(kind, context, value, shown)
    return f"{error['msg']}{shown}"


def _describe_length(kind: str, context: dict[str, Any], value: Any, shown: str) -> str:
    # A string field with a before-validator reports too_short and too_long
    # as for a list, so the input's type decides the wording.
    if isinstance(value, str):
        if "min_length" in context and context["min_length"] == 1 and not value:
            return "must not be empty"
        if kind in ("string_too_short", "too_short"):
            return f"must be at least {context['min_length']} characters{shown}"
        return f"must be at most {context['max_length']} characters, got {len(value)}"

    if kind in ("string_too_short", "too_short"):
        return f"must have at least {context['min_length']} item(s), got {len(value)}"
    return f"must have at most {context['max_length']} items, got {len(value)}"


def _tags(annotation: Any, discriminator: str) -> str:
    tags = []
    for variant in _union_variants(annotation):
        for field in variant.model_fields.values():
            if field.alias == discriminator:
                tags.extend(repr(tag) for tag in get_args(field.annotation))
    return f"; expected one of {', '.join(tags)}" if tags else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def kind_of(value: Any, with_value: bool = True) -> str:
    """Name the YAML kind of a parsed value, such as "a list" or "the number 5".

    With `with_value` false, scalars are named without their value.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}" if with_value else "a boolean"
    if _is_number(value):
        return f"the number {value}" if with_value else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _show_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show(value: Any, limit: int = 60) -> str:
    # Scalars are written as YAML writes them.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()

    # Redacted before the cut, which could leave too little of a URL for
    # the redaction to recognise.
    text = redact_text(repr(value))
    if len(text) > limit:
        return text[: limit - 3] + "..."
    return text


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_RANGE_WORDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("greater than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}
