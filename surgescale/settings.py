"""What every part's settings object shares: the log-level type and loading from a YAML file.

Each part (gateway, controller, KEDA scaler) has one frozen pydantic-settings class; its values
come from keyword overrides (the parsed flags) > environment (`SURGESCALE_<PART>_*`) > a YAML file
> defaults. `load(cls, config_file, env_var=...)` builds one with that order; `LogLevel` is the
validated `log_level` field they all have.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    YamlConfigSettingsSource,
)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(value: str) -> str:
    level = value.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {value!r}")
    return level


LogLevel = Annotated[str, AfterValidator(_level)]
"""A logging level name, any case, stored upper case; anything else is refused."""

S = TypeVar("S", bound=BaseSettings)


def load(
    cls: type[S], config_file: str | Path | None, *, env_var: str, what: str, **overrides: Any
) -> S:
    """`cls` from `overrides` > env > the YAML `config_file` (default: `$env_var`) > defaults.

    Raises pydantic's ValidationError (which names the field) or FileNotFoundError (saying which
    part's file, `what`, is missing).
    """
    path = config_file or os.environ.get(env_var)
    if not path:
        return cls(**overrides)
    yaml_path = Path(path)
    if not yaml_path.is_file():
        raise FileNotFoundError(f"{what} config file {path} does not exist")

    def sources(
        _cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path),
        )

    from_file = type(
        f"{cls.__name__}FromFile", (cls,), {"settings_customise_sources": classmethod(sources)}
    )
    loaded = from_file(**overrides)
    return cls.model_validate(loaded.model_dump())
