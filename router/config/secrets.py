"""Secret fields, written inline, as {env: NAME} or as {file: PATH}.

Secrets are resolved while the config is validated, so a missing variable or
file is reported with its path together with every other error. Error
messages name the variable or the file, never a value.
"""

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError

CONFIG_DIR_CONTEXT_KEY = "config_dir"
"""Validation context key: the folder that relative secret file paths start from."""

_FORMS = "a string, {env: NAME} or {file: PATH}"
SECRET_FILE_MAX_BYTES = 64 * 1024


def _secret_error(message: str, **context: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_secret", message, context)


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return _non_empty(value, "the inline secret")
    if not isinstance(value, dict) or len(value) != 1:
        raise _secret_error(f"invalid secret: expected {_FORMS}")

    [(source, name)] = value.items()
    if source not in ("env", "file") or not isinstance(name, str) or not name:
        raise _secret_error(f"invalid secret: expected {_FORMS}")

    if source == "env":
        return _read_env(name)
    return _read_file(name, info.context)


def _read_env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise _secret_error("environment variable {name} is not set", name=name)
    return _non_empty(value, f"environment variable {name}")


def _read_file(name: str, context: Any) -> str:
    config_dir = Path.cwd()
    if isinstance(context, dict) and CONFIG_DIR_CONTEXT_KEY in context:
        config_dir = Path(context[CONFIG_DIR_CONTEXT_KEY])
    path = (config_dir / name).absolute()

    try:
        # A bounded read, so that a path such as /dev/zero cannot hang the load.
        with path.open("rb") as file:
            content = file.read(SECRET_FILE_MAX_BYTES + 1)
        text = content.decode("utf-8")
    except FileNotFoundError:
        raise _secret_error("secret file {path} not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise _secret_error(
            "secret file {path} is not valid UTF-8", path=str(path)
        ) from None
    except OSError as exc:
        raise _secret_error(
            "cannot read secret file {path}: {reason}",
            path=str(path),
            reason=exc.strerror or type(exc).__name__,
        ) from None

    if len(content) > SECRET_FILE_MAX_BYTES:
        raise _secret_error(
            "secret file {path} is larger than {limit} bytes",
            path=str(path),
            limit=str(SECRET_FILE_MAX_BYTES),
        )

    # Editors end a file with a newline that is not part of the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    return _non_empty(text, f"secret file {path}")


def _non_empty(value: str, source: str) -> str:
    # An empty token or key would sign or authenticate with nothing.
    if not value:
        raise _secret_error("{source} is empty", source=source)
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]
"""A secret value, resolved from an inline string, a variable or a file.

A relative file path starts from the CONFIG_DIR_CONTEXT_KEY folder of the
validation context, or from the working directory without one.
"""
