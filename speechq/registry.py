"""The model registry: which public model names exist and which deployments serve them.

Read from a LiteLLM-style config file (`model_list` with `litellm_params` or `params`,
`model_info`, `os.environ/NAME` references, `router_settings`), or the built-in default:
the offline local engines, with OpenAI's model names as aliases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechq.modes import SPEECH, TRANSCRIPTION, deployment_mode
from worker.providers import PROVIDERS, get_provider
from worker.providers.base import Deployment

__all__ = [
    "ConfigError",
    "UnsetEnvironmentVariable",
    "Registry",
    "ModelInfo",
    "SPEECH",
    "TRANSCRIPTION",
    "BUILTIN_CONFIG",
    "load_registry",
    "parse_config",
]


BUILTIN_CONFIG: dict[str, Any] = {
    "model_list": [
        {
            "model_name": "local-tts",
            "litellm_params": {"model": "local/piper"},
            "model_info": {"mode": SPEECH},
        },
        {
            "model_name": "local-stt",
            "litellm_params": {"model": "local/whisper"},
            "model_info": {"mode": TRANSCRIPTION},
        },
    ],
    "router_settings": {
        # LiteLLM's name for aliases; lets an unchanged OpenAI client work offline.
        "model_group_alias": {
            "tts-1": "local-tts",
            "tts-1-hd": "local-tts",
            "gpt-4o-mini-tts": "local-tts",
            "whisper-1": "local-stt",
            "gpt-4o-transcribe": "local-stt",
        }
    },
}


class ConfigError(ValueError):
    """The config file cannot be used as it is."""


class UnsetEnvironmentVariable(ConfigError):
    """A config value `os.environ/NAME` names a variable that is not set."""

    def __init__(self, variable: str, where: str | None = None) -> None:
        self.variable = variable
        self.where = where
        place = f"{where}: " if where else ""
        super().__init__(
            f"{place}environment variable {variable} is referenced by the config but unset"
        )


@dataclass(frozen=True)
class ModelInfo:
    id: str
    mode: str
    owned_by: str
    alias_of: str | None = None


@dataclass(frozen=True)
class Registry:
    deployments: Mapping[str, tuple[Deployment, ...]]
    aliases: Mapping[str, str] = field(default_factory=dict)
    router_settings: Mapping[str, Any] = field(default_factory=dict)
    # End-user (`user` field) budgets in USD: named users, and LiteLLM's
    # `litellm_settings.max_end_user_budget` for everyone else.
    end_user_budgets: Mapping[str, float] = field(default_factory=dict)
    default_end_user_budget: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def end_user_budget(self, user: str | None) -> float | None:
        if user is None:
            return None
        return self.end_user_budgets.get(user, self.default_end_user_budget)

    def resolve(self, name: str) -> str | None:
        """The canonical model name for `name` (itself or what it aliases), or None."""
        if name in self.deployments:
            return name
        target = self.aliases.get(name)
        return target if target in self.deployments else None

    def deployments_for(self, name: str) -> tuple[Deployment, ...]:
        canonical = self.resolve(name)
        return self.deployments[canonical] if canonical else ()

    def mode_of(self, name: str) -> str | None:
        found = self.deployments_for(name)
        return deployment_mode(found[0]) if found else None

    def fallbacks_for(self, name: str) -> list[str]:
        names: list[str] = []
        for entry in self.router_settings.get("fallbacks") or []:
            if isinstance(entry, Mapping) and name in entry:
                names.extend(entry[name])
        return names

    def model_chain(self, model: str) -> list[str]:
        """The model, then its fallbacks (or `default_fallbacks`), resolved, no repeats:
        every model a call for `model` may end up on."""
        canonical = self.resolve(model) or model
        fallbacks = self.fallbacks_for(canonical)
        if not fallbacks:
            fallbacks = list(self.router_settings.get("default_fallbacks") or [])
        chain: list[str] = []
        for name in [canonical, *fallbacks]:
            resolved = self.resolve(name)
            if resolved and resolved not in chain:
                chain.append(resolved)
        return chain

    def request_character_limit(self, model: str) -> int | None:
        """The smallest per-request text limit among every deployment that may serve
        `model` (`model_chain`): a piece of a long job, or an audiobook segment, must fit
        whichever one serves it. None: no deployment has a limit."""
        limits = [
            limit
            for name in self.model_chain(model)
            for deployment in self.deployments_for(name)
            if (limit := get_provider(deployment).max_characters())
        ]
        return min(limits) if limits else None

    def models(self) -> list[ModelInfo]:
        out = [
            ModelInfo(name, deployment_mode(deps[0]), deps[0].provider)
            for name, deps in self.deployments.items()
        ]
        for alias, target in self.aliases.items():
            if target in self.deployments and alias not in self.deployments:
                deps = self.deployments[target]
                out.append(
                    ModelInfo(alias, deployment_mode(deps[0]), deps[0].provider, alias_of=target)
                )
        return out


def _resolve_env(value: Any, where: str | None = None) -> Any:
    """`value` with every `os.environ/NAME` replaced; `where` names the entry in errors."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        var = value.removeprefix("os.environ/")
        if var not in os.environ:
            raise UnsetEnvironmentVariable(var, where)
        return os.environ[var]
    if isinstance(value, dict):
        return {k: _resolve_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, where) for v in value]
    return value


def parse_config(raw: Mapping[str, Any]) -> Registry:
    entries = raw.get("model_list")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("the config needs a non-empty `model_list`")
    deployments: dict[str, list[Deployment]] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "model_name" not in entry:
            raise ConfigError(f"model_list[{position}] needs a `model_name`")
        params = entry.get("litellm_params", entry.get("params"))
        if not isinstance(params, Mapping) or not isinstance(params.get("model"), str):
            raise ConfigError(f"model_list[{position}] needs `litellm_params.model`")
        where = f"model_list[{position}] ({entry['model_name']!r})"
        params = _resolve_env(dict(params), where)
        provider, sep, model = params["model"].partition("/")
        if not sep:
            # LiteLLM treats a bare model name as OpenAI's.
            provider, model = "openai", params["model"]
        if provider not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ConfigError(
                f"model_list[{position}]: unknown provider {provider!r} in "
                f"{params['model']!r} (known: {known})"
            )
        name = str(entry["model_name"])
        group = deployments.setdefault(name, [])
        group.append(
            Deployment(
                model_name=name,
                provider=provider,
                model=model,
                params=params,
                model_info=_resolve_env(dict(entry.get("model_info") or {}), where),
                id=f"{name}#{len(group)}",
            )
        )
    router_settings = dict(raw.get("router_settings") or {})
    aliases = {str(k): str(v) for k, v in (router_settings.get("model_group_alias") or {}).items()}
    for alias, target in aliases.items():
        if target not in deployments:
            raise ConfigError(f"alias {alias!r} points to unknown model {target!r}")
    litellm_settings = raw.get("litellm_settings") or {}
    default_budget = litellm_settings.get("max_end_user_budget")
    try:
        budgets = {str(k): float(v) for k, v in (raw.get("end_user_budgets") or {}).items()}
        default = None if default_budget is None else float(default_budget)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError("end-user budgets must be numbers (USD)") from exc
    return Registry(
        deployments={name: tuple(deps) for name, deps in deployments.items()},
        aliases=aliases,
        router_settings=router_settings,
        end_user_budgets=budgets,
        default_end_user_budget=default,
        raw=raw,
    )


def load_registry(path: Path | None) -> Registry:
    if path is None:
        return parse_config(BUILTIN_CONFIG)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path} must be a mapping with `model_list`")
    return parse_config(raw)
