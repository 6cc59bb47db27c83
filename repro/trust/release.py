"""The `release` config group: licences and data locations, read from a resolved config. No torch.

These facts decide the openness audit (docs/openness.md). They live in the config,
so they are hashed into the lock with everything else: a release cannot quietly
change its licence after it was built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from repro.errors import ConfigError
from repro.records import JsonObject
from repro.trust.licenses import check_expression

# Where a third party can get the training data.
DATA_LOCATIONS: dict[str, str] = {
    "repo": "committed to the project's repository",
    "dvc": "on a DVC remote (data_url names it)",
    "url": "a public download (data_url)",
    "private": "exists but is not shared",
    "unknown": "not stated",
}
OBTAINABLE = ("repo", "dvc", "url")
_TEXT_KEYS = ("name", "data_url", "data_description", "technical_report", "research_paper")
_LICENSE_KEYS = ("weights_license", "code_license", "data_license")


@dataclass(frozen=True)
class ReleaseTerms:
    """What a user of the release may do, and where its inputs come from."""

    name: str | None = None  # the model's name on its card; else the project's package (repro.trust.model_card)
    weights_license: str | None = None
    code_license: str | None = None
    data_license: str | None = None
    data_location: str = "unknown"
    data_url: str | None = None
    data_description: str | None = None
    technical_report: str | None = None
    research_paper: str | None = None

    @property
    def data_obtainable(self) -> bool:
        return self.data_location in OBTAINABLE

    def to_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_config(cls, resolved: Mapping[str, object]) -> ReleaseTerms:
        """Read and check `release.*`; a config without the group gets 'unknown' everywhere."""
        block = resolved.get("release")  # optional group: absent means nothing was declared
        if block is None:
            return cls()
        if not isinstance(block, dict):
            raise ConfigError(f"config key release: expected a mapping, got {block!r}")
        unknown = sorted(set(block) - set(cls.__dataclass_fields__))
        if unknown:
            known = sorted(cls.__dataclass_fields__)
            raise ConfigError(f"config key release.{unknown[0]}: unknown key (known: {known})")
        for key in (*_LICENSE_KEYS, *_TEXT_KEYS):
            value = block.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"config key release.{key}: expected a non-empty string or null, got {value!r}")
        for key in _LICENSE_KEYS:
            if block.get(key) is not None:
                try:
                    check_expression(block[key])
                except ValueError as exc:
                    raise ConfigError(f"config key release.{key}: not an SPDX licence expression ({exc})") from None
        location = block.get("data_location", "unknown")
        if location not in DATA_LOCATIONS:
            raise ConfigError(f"config key release.data_location: {location!r} is not one of {list(DATA_LOCATIONS)}")
        if location == "url" and not block.get("data_url"):
            raise ConfigError("config keys release.data_location=url and release.data_url: url needs a data_url")
        return cls(**{k: block[k] for k in block})
