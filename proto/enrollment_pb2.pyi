from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BudgetPreset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_PRESET_UNSPECIFIED: _ClassVar[BudgetPreset]
    BUDGET_PRESET_SUBTLE: _ClassVar[BudgetPreset]
    BUDGET_PRESET_STANDARD: _ClassVar[BudgetPreset]
    BUDGET_PRESET_STRONG: _ClassVar[BudgetPreset]
BUDGET_PRESET_UNSPECIFIED: BudgetPreset
BUDGET_PRESET_SUBTLE: BudgetPreset
BUDGET_PRESET_STANDARD: BudgetPreset
BUDGET_PRESET_STRONG: BudgetPreset

class EnrollOptions(_message.Message):
    __slots__ = ("budget_preset", "eps", "eps_focus", "iterations", "views", "check_views", "surrogates", "seed", "mask_count", "perceptual", "members", "visibility_weight")
    BUDGET_PRESET_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    EPS_FOCUS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    CHECK_VIEWS_FIELD_NUMBER: _ClassVar[int]
    SURROGATES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    PERCEPTUAL_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    budget_preset: BudgetPreset
    eps: float
    eps_focus: float
    iterations: int
    views: int
    check_views: int
    surrogates: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    mask_count: int
    perceptual: PerceptualBudget
    members: int
    visibility_weight: float
    def __init__(self, budget_preset: _Optional[_Union[BudgetPreset, str]] = ..., eps: _Optional[float] = ..., eps_focus: _Optional[float] = ..., iterations: _Optional[int] = ..., views: _Optional[int] = ..., check_views: _Optional[int] = ..., surrogates: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., mask_count: _Optional[int] = ..., perceptual: _Optional[_Union[PerceptualBudget, _Mapping]] = ..., members: _Optional[int] = ..., visibility_weight: _Optional[float] = ...) -> None: ...

class PerceptualBudget(_message.Message):
    __slots__ = ("eps", "floor", "contrast")
    EPS_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    eps: float
    floor: float
    contrast: float
    def __init__(self, eps: _Optional[float] = ..., floor: _Optional[float] = ..., contrast: _Optional[float] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    options: EnrollOptions
    def __init__(self, image: _Optional[bytes] = ..., options: _Optional[_Union[EnrollOptions, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: EnrollResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[EnrollResult, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "fraction", "mask_index", "queue_position")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    stage: str
    fraction: float
    mask_index: int
    queue_position: int
    def __init__(self, stage: _Optional[str] = ..., fraction: _Optional[float] = ..., mask_index: _Optional[int] = ..., queue_position: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("x", "y", "width", "height", "score", "landmarks")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    score: float
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ..., score: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class SelfCheck(_message.Message):
    __slots__ = ("model", "similarity_before", "similarity_after", "match_threshold")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_AFTER_FIELD_NUMBER: _ClassVar[int]
    MATCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model: str
    similarity_before: float
    similarity_after: float
    match_threshold: float
    def __init__(self, model: _Optional[str] = ..., similarity_before: _Optional[float] = ..., similarity_after: _Optional[float] = ..., match_threshold: _Optional[float] = ...) -> None: ...

class Visibility(_message.Message):
    __slots__ = ("ssim", "psnr", "face_ssim", "flip_mean", "flip_p99", "flip_visible")
    SSIM_FIELD_NUMBER: _ClassVar[int]
    PSNR_FIELD_NUMBER: _ClassVar[int]
    FACE_SSIM_FIELD_NUMBER: _ClassVar[int]
    FLIP_MEAN_FIELD_NUMBER: _ClassVar[int]
    FLIP_P99_FIELD_NUMBER: _ClassVar[int]
    FLIP_VISIBLE_FIELD_NUMBER: _ClassVar[int]
    ssim: float
    psnr: float
    face_ssim: float
    flip_mean: float
    flip_p99: float
    flip_visible: float
    def __init__(self, ssim: _Optional[float] = ..., psnr: _Optional[float] = ..., face_ssim: _Optional[float] = ..., flip_mean: _Optional[float] = ..., flip_p99: _Optional[float] = ..., flip_visible: _Optional[float] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    seconds: float
    def __init__(self, stage: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class MaskResult(_message.Message):
    __slots__ = ("fcmask", "seed", "self_check", "timings", "visibility")
    FCMASK_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SELF_CHECK_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    fcmask: bytes
    seed: int
    self_check: _containers.RepeatedCompositeFieldContainer[SelfCheck]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    visibility: Visibility
    def __init__(self, fcmask: _Optional[bytes] = ..., seed: _Optional[int] = ..., self_check: _Optional[_Iterable[_Union[SelfCheck, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., visibility: _Optional[_Union[Visibility, _Mapping]] = ...) -> None: ...

class EnrollResult(_message.Message):
    __slots__ = ("masks", "face", "request_id", "queue_seconds")
    MASKS_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[MaskResult]
    face: DetectedFace
    request_id: str
    queue_seconds: float
    def __init__(self, masks: _Optional[_Iterable[_Union[MaskResult, _Mapping]]] = ..., face: _Optional[_Union[DetectedFace, _Mapping]] = ..., request_id: _Optional[str] = ..., queue_seconds: _Optional[float] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "input_size", "embedding_dim", "match_threshold", "file", "sha256", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    MATCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_size: int
    embedding_dim: int
    match_threshold: float
    file: str
    sha256: str
    backend: str
    def __init__(self, name: _Optional[str] = ..., input_size: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., match_threshold: _Optional[float] = ..., file: _Optional[str] = ..., sha256: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_image_bytes", "max_image_pixels", "max_message_bytes", "max_views", "max_check_views", "max_iterations", "max_masks", "workers", "queue_depth", "rate_limit_per_minute", "max_queued_pixels")
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VIEWS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHECK_VIEWS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_MASKS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_PIXELS_FIELD_NUMBER: _ClassVar[int]
    max_image_bytes: int
    max_image_pixels: int
    max_message_bytes: int
    max_views: int
    max_check_views: int
    max_iterations: int
    max_masks: int
    workers: int
    queue_depth: int
    rate_limit_per_minute: float
    max_queued_pixels: int
    def __init__(self, max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_views: _Optional[int] = ..., max_check_views: _Optional[int] = ..., max_iterations: _Optional[int] = ..., max_masks: _Optional[int] = ..., workers: _Optional[int] = ..., queue_depth: _Optional[int] = ..., rate_limit_per_minute: _Optional[float] = ..., max_queued_pixels: _Optional[int] = ...) -> None: ...

class EnrollDefaults(_message.Message):
    __slots__ = ("eps", "eps_focus", "iterations", "views", "check_views", "surrogates", "seed")
    EPS_FIELD_NUMBER: _ClassVar[int]
    EPS_FOCUS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    CHECK_VIEWS_FIELD_NUMBER: _ClassVar[int]
    SURROGATES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    eps: float
    eps_focus: float
    iterations: int
    views: int
    check_views: int
    surrogates: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, eps: _Optional[float] = ..., eps_focus: _Optional[float] = ..., iterations: _Optional[int] = ..., views: _Optional[int] = ..., check_views: _Optional[int] = ..., surrogates: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("server_version", "api_version", "ready", "backend", "view_generator", "models", "limits", "defaults", "versions", "auth_required", "notes")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    VIEW_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    ready: bool
    backend: str
    view_generator: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    limits: Limits
    defaults: EnrollDefaults
    versions: _containers.ScalarMap[str, str]
    auth_required: bool
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., ready: _Optional[bool] = ..., backend: _Optional[str] = ..., view_generator: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., defaults: _Optional[_Union[EnrollDefaults, _Mapping]] = ..., versions: _Optional[_Mapping[str, str]] = ..., auth_required: _Optional[bool] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("reason", "domain", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REASON_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    reason: str
    domain: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, reason: _Optional[str] = ..., domain: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
