"""Python client of the FaceCloak enrollment service (facecloak.v1).

    from facecloak.clients.python import enroll_remote
    mask_bytes = enroll_remote("host:50051", Path("me.jpg").read_bytes(), EnrollConfig(), progress=print)

Connection settings not passed as arguments come from the environment, so ``facecloak enroll
--server`` can use them too: FACECLOAK_API_KEY, FACECLOAK_TLS_CA (PEM roots; enables TLS),
FACECLOAK_TLS_CERT + FACECLOAK_TLS_KEY (client certificate for mTLS), FACECLOAK_TLS_SERVER_NAME.
Failures raise ``RemoteEnrollError`` (a FaceCloakError) carrying the server's machine-readable
``reason`` and gRPC ``code``; core reasons (NO_FACE, ...) keep the CLI's exit codes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ..enroll import EnrollConfig
from ..errors import (BadOptionError, FaceCloakError, FaceTooSmallError, ImageDecodeError, ImageTooLargeError,
                      NoFaceError)
from ..proto import enrollment_pb2 as pb
from ..proto.convert import options_from_config

Progress = Callable[[str, float], None]
SERVICE = "/facecloak.v1.EnrollmentService/"
REASON_KEY = "facecloak-reason"
ERROR_INFO_KEY = "facecloak-error-bin"
_EXIT_CODES = {cls.reason: cls.exit_code for cls in
               (ImageDecodeError, ImageTooLargeError, NoFaceError, FaceTooSmallError, BadOptionError)}
_EXIT_CODES["MALFORMED_REQUEST"] = BadOptionError.exit_code


class RemoteEnrollError(FaceCloakError):
    """The server (or the connection to it) refused or failed the call."""

    exit_code = 9

    def __init__(self, reason: str, code: grpc.StatusCode, message: str, details: Mapping[str, str] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(f"server: {message} [{reason}]")
        self.reason = reason
        self.code = code
        self.details = dict(details or {})
        self.request_id = request_id
        self.exit_code = _EXIT_CODES.get(reason, RemoteEnrollError.exit_code)


def _from_rpc_error(err: grpc.RpcError) -> RemoteEnrollError:
    trailing = dict(err.trailing_metadata() or ())
    info = pb.ErrorInfo()
    if ERROR_INFO_KEY in trailing:
        try:
            info.ParseFromString(trailing[ERROR_INFO_KEY])
        except Exception:  # noqa: BLE001 - a garbled detail must not hide the status itself
            info.Clear()
    # Without a reason the error came from gRPC itself (connection, transport limits): use the status name.
    reason = info.reason or str(trailing.get(REASON_KEY) or err.code().name)
    return RemoteEnrollError(reason, err.code(), err.details() or err.code().name, info.metadata,
                             trailing.get("x-request-id"))


@dataclass(frozen=True)
class ClientSettings:
    """How to reach a server. Paths are PEM files; None means "take it from the environment"."""

    api_key: str | None = None
    root_certificates: str | None = None  # path: enables TLS
    certificate_chain: str | None = None  # path: client certificate (mTLS)
    private_key: str | None = None
    server_name: str | None = None  # TLS name to verify when it differs from the target host
    insecure: bool | None = None  # force plaintext even if FACECLOAK_TLS_CA is set
    options: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def resolved(self, environ: Mapping[str, str]) -> "ClientSettings":
        pick = lambda value, var: value if value is not None else (environ.get(var) or None)  # noqa: E731
        return ClientSettings(
            api_key=pick(self.api_key, "FACECLOAK_API_KEY"),
            root_certificates=pick(self.root_certificates, "FACECLOAK_TLS_CA"),
            certificate_chain=pick(self.certificate_chain, "FACECLOAK_TLS_CERT"),
            private_key=pick(self.private_key, "FACECLOAK_TLS_KEY"),
            server_name=pick(self.server_name, "FACECLOAK_TLS_SERVER_NAME"),
            insecure=bool(self.insecure), options=self.options,
        )


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadOptionError(f"cannot read {path}: {exc.strerror}") from None


def open_channel(target: str, settings: ClientSettings) -> grpc.Channel:
    """A plaintext or (m)TLS channel to ``target`` (host:port)."""
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024), *settings.options]
    use_tls = settings.root_certificates is not None or settings.certificate_chain is not None
    if settings.insecure or not use_tls:
        return grpc.insecure_channel(target, options=options)
    if (settings.certificate_chain is None) != (settings.private_key is None):
        raise BadOptionError("a client certificate needs both the certificate chain and the private key")
    creds = grpc.ssl_channel_credentials(_read(settings.root_certificates), _read(settings.private_key),
                                         _read(settings.certificate_chain))
    if settings.server_name:
        options.append(("grpc.ssl_target_name_override", settings.server_name))
    return grpc.secure_channel(target, creds, options=options)


@dataclass
class RemoteEnrollment:
    """Everything the server returned for one Enroll call."""

    masks: list[bytes]
    result: pb.EnrollResult
    request_id: str


class EnrollmentClient:
    """A connection to one server; reuse it for many calls. Use as a context manager or call ``close``."""

    def __init__(self, target: str, settings: ClientSettings = ClientSettings(),
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings.resolved(os.environ if environ is None else environ)
        self.channel = open_channel(target, self.settings)
        self._enroll = self.channel.unary_stream(SERVICE + "Enroll", request_serializer=pb.EnrollRequest.SerializeToString,
                                                 response_deserializer=pb.EnrollResponse.FromString)
        self._describe = self.channel.unary_unary(SERVICE + "Describe",
                                                  request_serializer=pb.DescribeRequest.SerializeToString,
                                                  response_deserializer=pb.DescribeResponse.FromString)

    def __enter__(self) -> "EnrollmentClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        meta = (("x-request-id", request_id),)
        return meta + ((("x-api-key", self.settings.api_key),) if self.settings.api_key else ())

    def describe(self, timeout: float | None = 10.0) -> pb.DescribeResponse:
        try:
            return self._describe(pb.DescribeRequest(), timeout=timeout, metadata=self._metadata(uuid.uuid4().hex))
        except grpc.RpcError as err:
            raise _from_rpc_error(err) from None

    def start_enroll(self, image: bytes, options: pb.EnrollOptions, timeout: float | None = None,
                     request_id: str | None = None) -> Iterator[pb.EnrollResponse]:
        """The raw response stream (a grpc call object: ``.cancel()`` stops the enrollment on the server)."""
        return self._enroll(pb.EnrollRequest(image=image, options=options), timeout=timeout,
                            metadata=self._metadata(request_id or uuid.uuid4().hex))

    def enroll(self, image: bytes, options: pb.EnrollOptions, progress: Progress | None = None,
               timeout: float | None = None, wait_for_ready: bool = False) -> RemoteEnrollment:
        """Enroll and wait for the result, calling ``progress(stage, fraction)`` on every event."""
        request_id = uuid.uuid4().hex
        if wait_for_ready:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        call = self.start_enroll(image, options, timeout, request_id)
        try:
            for response in call:
                if response.HasField("progress") and progress is not None:
                    progress(response.progress.stage, response.progress.fraction)
                elif response.HasField("result"):
                    return RemoteEnrollment([m.fcmask for m in response.result.masks], response.result, request_id)
        except grpc.RpcError as err:
            raise _from_rpc_error(err) from None
        except BaseException:
            call.cancel()  # e.g. Ctrl-C or a progress callback raising: stop the server's work too
            raise
        raise RemoteEnrollError("INTERNAL", grpc.StatusCode.INTERNAL, "the stream ended without a result",
                                request_id=request_id)


def enroll_remote(target: str, image_bytes: bytes, config: EnrollConfig, progress: Progress | None = None, *,
                  api_key: str | None = None, root_certificates: str | None = None,
                  certificate_chain: str | None = None, private_key: str | None = None,
                  server_name: str | None = None, insecure: bool | None = None,
                  timeout: float | None = None) -> bytes:
    """Enroll ``image_bytes`` on the server at ``target`` with ``config``; returns the .fcmask bytes.

    The result is byte-identical to ``encode_mask(Enroller().enroll(photo, config).mask)`` on a
    server of the same version. TLS/auth arguments default to the FACECLOAK_* environment variables.
    """
    options = options_from_config(config)
    settings = ClientSettings(api_key, root_certificates, certificate_chain, private_key, server_name, insecure)
    with EnrollmentClient(target, settings) as client:
        return client.enroll(image_bytes, options, progress=progress, timeout=timeout).masks[0]
