"""Server configuration: one dataclass, filled from a TOML file, then FACECLOAK_SERVER_* env vars, then flags."""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..backend_names import BACKENDS
from ..enroll import DEFAULT_SURROGATES
from ..errors import BadOptionError
from ..models import get_card

ENV_PREFIX = "FACECLOAK_SERVER_"
# torch-cpu runs PGD with PyTorch eager; the others run the exported engines (facecloak-export) and fall
# back to the next less capable runtime, then to torch-cpu, with the reason logged and in Describe.
SECRET_FIELDS = ("api_keys",)  # never accepted as flags: command lines are visible to every local user


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 50051  # 0 = any free port
    workers: int = 1  # concurrent enrollments (torch already spreads one over the cores)
    queue_depth: int = 8  # requests allowed to wait for a worker; more answer QUEUE_FULL at once
    torch_threads: int = 0  # 0 = torch's default
    # auto: the step compiled ahead of time for this CPU (prepared into the user cache at the first warm-up), falling
    # back to torch-cpu (PyTorch eager) with the reason in Describe; 1.8-1.9x faster than eager (README "Figures")
    backend: str = "auto"
    engine_dir: str | None = None  # facecloak-export output for the engine backends (default engines/build)
    bf16_surrogates: bool = False  # PGDConfig.bf16_surrogates in every enrollment (docs/eval.md "Reduced precision and dead weights")
    # PGDConfig.bf16_convolutions in every enrollment: true, false, or auto (None: on where the CPU has bfloat16 units;
    # docs/eval.md "bfloat16 convolutions")
    bf16_convolutions: bool | None = None
    models: tuple[str, ...] = DEFAULT_SURROGATES  # surrogates loaded at start-up; requests may pick a subset
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Decoded pixels all admitted requests (running and waiting) may hold together, read from the image
    # headers before decoding: 64 M = 192 MB of RGB, one photo at the 40 MP limit plus a few phone photos.
    # More answer QUEUE_FULL at once. Sized so three 36 MP uploads at once keep the server under 1.5 GiB.
    max_queued_pixels: int = 64_000_000
    max_views: int = 32
    max_check_views: int = 16
    max_iterations: int = 100
    max_masks: int = 5
    tls_cert: str | None = None  # PEM server certificate chain; with tls_key enables TLS
    tls_key: str | None = None
    tls_client_ca: str | None = None  # PEM CA bundle: clients must present a certificate it signed (mTLS)
    api_keys_file: str | None = None  # lines "key_id:secret"; any key enables auth
    api_keys: tuple[str, ...] = ()  # same format, from env or the config file (never from flags)
    rate_limit_per_minute: float = 0.0  # Enroll calls per API key (per peer without auth); 0 = off
    rate_limit_burst: int = 5
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # Prometheus /metrics on this port; None = off, 0 = any free port
    grace_seconds: float = 30.0  # graceful shutdown: in-flight enrollments get this long to finish
    log_level: str = "INFO"

    @property
    def max_message_bytes(self) -> int:
        # The image plus generous room for options; bigger messages are refused by gRPC itself.
        return self.max_image_bytes + 64 * 1024

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def validate(self) -> None:
        """BadOptionError naming the first inconsistent setting."""
        if not 0 <= self.port <= 65535:
            raise BadOptionError(f"port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise BadOptionError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        for name in ("workers", "max_image_bytes", "max_image_pixels", "max_queued_pixels", "max_views",
                     "max_iterations", "max_masks", "rate_limit_burst"):
            if getattr(self, name) < 1:
                raise BadOptionError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("queue_depth", "torch_threads", "max_check_views", "rate_limit_per_minute", "grace_seconds"):
            if getattr(self, name) < 0:
                raise BadOptionError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_queued_pixels < self.max_image_pixels:
            raise BadOptionError(f"max_queued_pixels ({self.max_queued_pixels}) must hold at least one photo of "
                                 f"max_image_pixels ({self.max_image_pixels})")
        if self.backend not in BACKENDS:
            raise BadOptionError(f"backend {self.backend!r} is not available in this build; available: {list(BACKENDS)}")
        if not self.models:
            raise BadOptionError("at least one model is needed")
        for name in self.models:
            get_card(name)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BadOptionError("TLS needs both tls_cert and tls_key")
        if self.tls_client_ca and not self.tls:
            raise BadOptionError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca, self.api_keys_file):
            if path is not None and not Path(path).is_file():
                raise BadOptionError(f"{path} is not a readable file")


def _field_types() -> dict[str, type]:
    """Field name -> the scalar type to parse (Optional[...] unwrapped; tuples are comma lists of str)."""
    out = {}
    for name, hint in typing.get_type_hints(ServerConfig).items():
        if isinstance(hint, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        out[name] = tuple if typing.get_origin(hint) is tuple else hint
    return out


def _boolean(value: object, auto: bool = False) -> bool | None:
    """A TOML boolean, or true/false (1/0, yes/no, on/off) from the environment or a flag; with ``auto``, also
    "auto" (None: the core decides)."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
    word = str(value).strip().lower()
    if auto and word == "auto":
        return None
    if word not in words:
        raise ValueError("expected true, false or auto" if auto else "expected true or false")
    return words[word]


def _convert(name: str, value: object) -> object:
    kind = _field_types()[name]
    try:
        if kind is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[union-attr]
            return tuple(str(v).strip() for v in items if str(v).strip())
        if kind is str and not isinstance(value, str):
            raise ValueError("expected a string")
        if kind is bool:
            return _boolean(value, auto=ServerConfig.__dataclass_fields__[name].default is None)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise BadOptionError(f"bad value for {name}: {value!r} ({exc})") from None


def _from_mapping(values: Mapping[str, object], source: str) -> dict[str, object]:
    known = _field_types()
    unknown = sorted(set(values) - known.keys())
    if unknown:
        raise BadOptionError(f"unknown setting(s) in {source}: {', '.join(unknown)}")
    return {k: _convert(k, v) for k, v in values.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facecloak-server", allow_abbrev=False,  # "--api-keys" must not match "--api-keys-file"
        description="FaceCloak enrollment service (gRPC). Settings: --config FILE (TOML), then "
                    f"{ENV_PREFIX}<NAME> environment variables, then these flags.",
    )
    parser.add_argument("--config", help="TOML file with any of the settings below (and api_keys)")
    for f in fields(ServerConfig):
        if f.name in SECRET_FIELDS:
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            help=f"default: {f.default!r}" + (" (comma-separated)" if isinstance(f.default, tuple) else ""))
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults < config file < environment < flags; validated."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                values.update(_from_mapping(tomllib.load(fh), args.config))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadOptionError(f"cannot read config file {args.config}: {exc}") from None
    env = {k[len(ENV_PREFIX):].lower(): v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    values.update(_from_mapping(env, "the environment"))
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    values.update(_from_mapping(flags, "the command line"))
    config = replace(ServerConfig(), **values)
    config.validate()
    return config
