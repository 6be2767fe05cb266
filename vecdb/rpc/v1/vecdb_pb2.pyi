from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]
    METRIC_IP: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]

class IndexKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_KIND_UNSPECIFIED: _ClassVar[IndexKind]
    INDEX_KIND_FLAT: _ClassVar[IndexKind]
    INDEX_KIND_SPANN: _ClassVar[IndexKind]
    INDEX_KIND_MULTIVECTOR: _ClassVar[IndexKind]

class CollectionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLLECTION_KIND_UNSPECIFIED: _ClassVar[CollectionKind]
    COLLECTION_KIND_DENSE: _ClassVar[CollectionKind]
    COLLECTION_KIND_MULTIVECTOR: _ClassVar[CollectionKind]

class IdType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ID_TYPE_UNSPECIFIED: _ClassVar[IdType]
    ID_TYPE_INT: _ClassVar[IdType]
    ID_TYPE_STR: _ClassVar[IdType]

class KeyRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ROLE_UNSPECIFIED: _ClassVar[KeyRole]
    KEY_ROLE_READ: _ClassVar[KeyRole]
    KEY_ROLE_WRITE: _ClassVar[KeyRole]
    KEY_ROLE_ADMIN: _ClassVar[KeyRole]
METRIC_UNSPECIFIED: Metric
METRIC_L2: Metric
METRIC_IP: Metric
METRIC_COSINE: Metric
INDEX_KIND_UNSPECIFIED: IndexKind
INDEX_KIND_FLAT: IndexKind
INDEX_KIND_SPANN: IndexKind
INDEX_KIND_MULTIVECTOR: IndexKind
COLLECTION_KIND_UNSPECIFIED: CollectionKind
COLLECTION_KIND_DENSE: CollectionKind
COLLECTION_KIND_MULTIVECTOR: CollectionKind
ID_TYPE_UNSPECIFIED: IdType
ID_TYPE_INT: IdType
ID_TYPE_STR: IdType
KEY_ROLE_UNSPECIFIED: KeyRole
KEY_ROLE_READ: KeyRole
KEY_ROLE_WRITE: KeyRole
KEY_ROLE_ADMIN: KeyRole

class Vectors(_message.Message):
    __slots__ = ("dim", "count", "data", "row_lengths")
    DIM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ROW_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    count: int
    data: bytes
    row_lengths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dim: _Optional[int] = ..., count: _Optional[int] = ..., data: _Optional[bytes] = ..., row_lengths: _Optional[_Iterable[int]] = ...) -> None: ...

class IntIds(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class StrIds(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Id(_message.Message):
    __slots__ = ("int_id", "str_id", "invalid")
    INT_ID_FIELD_NUMBER: _ClassVar[int]
    STR_ID_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    int_id: int
    str_id: bytes
    invalid: str
    def __init__(self, int_id: _Optional[int] = ..., str_id: _Optional[bytes] = ..., invalid: _Optional[str] = ...) -> None: ...

class MixedIds(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Id]
    def __init__(self, values: _Optional[_Iterable[_Union[Id, _Mapping]]] = ...) -> None: ...

class Ids(_message.Message):
    __slots__ = ("ints", "strs", "mixed")
    INTS_FIELD_NUMBER: _ClassVar[int]
    STRS_FIELD_NUMBER: _ClassVar[int]
    MIXED_FIELD_NUMBER: _ClassVar[int]
    ints: IntIds
    strs: StrIds
    mixed: MixedIds
    def __init__(self, ints: _Optional[_Union[IntIds, _Mapping]] = ..., strs: _Optional[_Union[StrIds, _Mapping]] = ..., mixed: _Optional[_Union[MixedIds, _Mapping]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "dim", "metric", "kind", "id_type", "index", "count", "multi_tenant", "index_params", "indexed", "buffered", "index_state", "index_progress", "last_build_seconds", "payload_indexes")
    class PayloadIndexesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MULTI_TENANT_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    INDEX_STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_BUILD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_INDEXES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: Metric
    kind: CollectionKind
    id_type: IdType
    index: IndexKind
    count: int
    multi_tenant: bool
    index_params: str
    indexed: int
    buffered: int
    index_state: str
    index_progress: float
    last_build_seconds: float
    payload_indexes: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., kind: _Optional[_Union[CollectionKind, str]] = ..., id_type: _Optional[_Union[IdType, str]] = ..., index: _Optional[_Union[IndexKind, str]] = ..., count: _Optional[int] = ..., multi_tenant: _Optional[bool] = ..., index_params: _Optional[str] = ..., indexed: _Optional[int] = ..., buffered: _Optional[int] = ..., index_state: _Optional[str] = ..., index_progress: _Optional[float] = ..., last_build_seconds: _Optional[float] = ..., payload_indexes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SnapshotInfo(_message.Message):
    __slots__ = ("name", "collection", "seq", "created", "bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    collection: str
    seq: int
    created: float
    bytes: int
    def __init__(self, name: _Optional[str] = ..., collection: _Optional[str] = ..., seq: _Optional[int] = ..., created: _Optional[float] = ..., bytes: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dim", "metric", "id_type", "index", "index_params", "kind", "multi_tenant", "exist_ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MULTI_TENANT_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: Metric
    id_type: IdType
    index: IndexKind
    index_params: str
    kind: CollectionKind
    multi_tenant: bool
    exist_ok: bool
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., id_type: _Optional[_Union[IdType, str]] = ..., index: _Optional[_Union[IndexKind, str]] = ..., index_params: _Optional[str] = ..., kind: _Optional[_Union[CollectionKind, str]] = ..., multi_tenant: _Optional[bool] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: CollectionInfo
    def __init__(self, info: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class CollectionExistsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CollectionExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: CollectionInfo
    def __init__(self, info: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "ids", "vectors", "payloads", "tenant", "grant_to")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GRANT_TO_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    vectors: Vectors
    payloads: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    grant_to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., grant_to: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class UpsertStreamRequest(_message.Message):
    __slots__ = ("seq", "batch")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    batch: UpsertRequest
    def __init__(self, seq: _Optional[int] = ..., batch: _Optional[_Union[UpsertRequest, _Mapping]] = ...) -> None: ...

class UpsertStreamAck(_message.Message):
    __slots__ = ("seq", "upserted", "credits")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    upserted: int
    credits: int
    def __init__(self, seq: _Optional[int] = ..., upserted: _Optional[int] = ..., credits: _Optional[int] = ...) -> None: ...

class Points(_message.Message):
    __slots__ = ("ids", "vectors", "payloads")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    ids: Ids
    vectors: Vectors
    payloads: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Union[Ids, _Mapping]] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "with_vectors", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    with_vectors: bool
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., with_vectors: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: Points
    def __init__(self, points: _Optional[_Union[Points, _Mapping]] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("collection", "filter", "limit", "offset", "with_vectors", "with_payload", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: str
    limit: int
    offset: Id
    with_vectors: bool
    with_payload: bool
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[_Union[Id, _Mapping]] = ..., with_vectors: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("points", "next_offset")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    points: Points
    next_offset: Id
    def __init__(self, points: _Optional[_Union[Points, _Mapping]] = ..., next_offset: _Optional[_Union[Id, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    filter: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., filter: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection", "filter", "tenant", "allow_partial")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: str
    tenant: str
    allow_partial: bool
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[str] = ..., tenant: _Optional[str] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count", "missing_shards")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    missing_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, count: _Optional[int] = ..., missing_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class SetPayloadRequest(_message.Message):
    __slots__ = ("collection", "ids", "payload", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    payload: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., payload: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class SetPayloadResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class CreatePayloadIndexRequest(_message.Message):
    __slots__ = ("collection", "key", "type")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    key: str
    type: str
    def __init__(self, collection: _Optional[str] = ..., key: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class CreatePayloadIndexResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DropPayloadIndexRequest(_message.Message):
    __slots__ = ("collection", "key")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    key: str
    def __init__(self, collection: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class DropPayloadIndexResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("collection", "no_wait")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    no_wait: bool
    def __init__(self, collection: _Optional[str] = ..., no_wait: _Optional[bool] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("k", "filter", "params", "with_payload", "with_vectors", "with_stats")
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_STATS_FIELD_NUMBER: _ClassVar[int]
    k: int
    filter: str
    params: str
    with_payload: bool
    with_vectors: bool
    with_stats: bool
    def __init__(self, k: _Optional[int] = ..., filter: _Optional[str] = ..., params: _Optional[str] = ..., with_payload: _Optional[bool] = ..., with_vectors: _Optional[bool] = ..., with_stats: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "options", "tenant", "tenants", "allow_partial", "timeout_ms")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: Vectors
    options: SearchOptions
    tenant: str
    tenants: _containers.RepeatedScalarFieldContainer[str]
    allow_partial: bool
    timeout_ms: int
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Union[Vectors, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., tenant: _Optional[str] = ..., tenants: _Optional[_Iterable[str]] = ..., allow_partial: _Optional[bool] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("nq", "k", "ids", "distances", "found", "payloads", "with_payload", "vectors", "with_vectors", "stats", "degraded", "missing_shards")
    NQ_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    nq: int
    k: int
    ids: Ids
    distances: bytes
    found: _containers.RepeatedScalarFieldContainer[int]
    payloads: _containers.RepeatedScalarFieldContainer[str]
    with_payload: bool
    vectors: Vectors
    with_vectors: bool
    stats: SearchStats
    degraded: str
    missing_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nq: _Optional[int] = ..., k: _Optional[int] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., distances: _Optional[bytes] = ..., found: _Optional[_Iterable[int]] = ..., payloads: _Optional[_Iterable[str]] = ..., with_payload: _Optional[bool] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., with_vectors: _Optional[bool] = ..., stats: _Optional[_Union[SearchStats, _Mapping]] = ..., degraded: _Optional[str] = ..., missing_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: SnapshotInfo
    def __init__(self, snapshot: _Optional[_Union[SnapshotInfo, _Mapping]] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotInfo]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[SnapshotInfo, _Mapping]]] = ...) -> None: ...

class RestoreSnapshotRequest(_message.Message):
    __slots__ = ("collection", "snapshot")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    snapshot: str
    def __init__(self, collection: _Optional[str] = ..., snapshot: _Optional[str] = ...) -> None: ...

class RestoreSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("collection", "snapshot")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    snapshot: str
    def __init__(self, collection: _Optional[str] = ..., snapshot: _Optional[str] = ...) -> None: ...

class DeleteSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: str
    def __init__(self, stats: _Optional[str] = ...) -> None: ...

class ApiKeyInfo(_message.Message):
    __slots__ = ("id", "role", "tenants", "collections", "description", "created", "source")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: KeyRole
    tenants: _containers.RepeatedScalarFieldContainer[str]
    collections: _containers.RepeatedScalarFieldContainer[str]
    description: str
    created: float
    source: str
    def __init__(self, id: _Optional[str] = ..., role: _Optional[_Union[KeyRole, str]] = ..., tenants: _Optional[_Iterable[str]] = ..., collections: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., created: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("role", "tenants", "collections", "description")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    role: KeyRole
    tenants: _containers.RepeatedScalarFieldContainer[str]
    collections: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, role: _Optional[_Union[KeyRole, str]] = ..., tenants: _Optional[_Iterable[str]] = ..., collections: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("info", "key")
    INFO_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    info: ApiKeyInfo
    key: str
    def __init__(self, info: _Optional[_Union[ApiKeyInfo, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TenantInfo(_message.Message):
    __slots__ = ("name", "vectors", "owned", "bytes", "state", "nodes", "progress", "created", "max_vectors", "max_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MAX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    vectors: int
    owned: int
    bytes: int
    state: str
    nodes: int
    progress: float
    created: float
    max_vectors: int
    max_bytes: int
    def __init__(self, name: _Optional[str] = ..., vectors: _Optional[int] = ..., owned: _Optional[int] = ..., bytes: _Optional[int] = ..., state: _Optional[str] = ..., nodes: _Optional[int] = ..., progress: _Optional[float] = ..., created: _Optional[float] = ..., max_vectors: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("collection", "tenant", "max_vectors", "max_bytes")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    tenant: str
    max_vectors: int
    max_bytes: int
    def __init__(self, collection: _Optional[str] = ..., tenant: _Optional[str] = ..., max_vectors: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: TenantInfo
    def __init__(self, info: _Optional[_Union[TenantInfo, _Mapping]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("collection", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetTenantResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: TenantInfo
    def __init__(self, info: _Optional[_Union[TenantInfo, _Mapping]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("collection", "limit", "offset")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    collection: str
    limit: int
    offset: str
    def __init__(self, collection: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[str] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants", "next_offset")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantInfo]
    next_offset: str
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantInfo, _Mapping]]] = ..., next_offset: _Optional[str] = ...) -> None: ...

class DropTenantRequest(_message.Message):
    __slots__ = ("collection", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class DropTenantResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("collection", "ids", "tenant", "owner")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    tenant: str
    owner: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., tenant: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: int
    def __init__(self, changed: _Optional[int] = ...) -> None: ...

class Documents(_message.Message):
    __slots__ = ("dim", "count", "data", "token_counts", "weights", "has_weights", "widths")
    DIM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    HAS_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WIDTHS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    count: int
    data: bytes
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    weights: bytes
    has_weights: _containers.RepeatedScalarFieldContainer[bool]
    widths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dim: _Optional[int] = ..., count: _Optional[int] = ..., data: _Optional[bytes] = ..., token_counts: _Optional[_Iterable[int]] = ..., weights: _Optional[bytes] = ..., has_weights: _Optional[_Iterable[bool]] = ..., widths: _Optional[_Iterable[int]] = ...) -> None: ...

class UpsertDocumentsRequest(_message.Message):
    __slots__ = ("collection", "ids", "documents", "payloads", "tenant", "grant_to")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GRANT_TO_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    documents: Documents
    payloads: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    grant_to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., documents: _Optional[_Union[Documents, _Mapping]] = ..., payloads: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., grant_to: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertDocumentsResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class SearchDocumentsRequest(_message.Message):
    __slots__ = ("collection", "queries", "options", "single", "tenant", "tenants", "allow_partial")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SINGLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: Documents
    options: SearchOptions
    single: bool
    tenant: str
    tenants: _containers.RepeatedScalarFieldContainer[str]
    allow_partial: bool
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Union[Documents, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ..., single: _Optional[bool] = ..., tenant: _Optional[str] = ..., tenants: _Optional[_Iterable[str]] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class SearchDocumentsResponse(_message.Message):
    __slots__ = ("result", "stats", "missing_shards")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    result: SearchResponse
    stats: str
    missing_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, result: _Optional[_Union[SearchResponse, _Mapping]] = ..., stats: _Optional[str] = ..., missing_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class GetDocumentsRequest(_message.Message):
    __slots__ = ("collection", "ids", "with_tokens", "with_payload", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    with_tokens: bool
    with_payload: bool
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., with_tokens: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetDocumentsResponse(_message.Message):
    __slots__ = ("ids", "documents", "payloads", "with_payload")
    IDS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ids: Ids
    documents: Documents
    payloads: _containers.RepeatedScalarFieldContainer[str]
    with_payload: bool
    def __init__(self, ids: _Optional[_Union[Ids, _Mapping]] = ..., documents: _Optional[_Union[Documents, _Mapping]] = ..., payloads: _Optional[_Iterable[str]] = ..., with_payload: _Optional[bool] = ...) -> None: ...

class UpdateTenantRequest(_message.Message):
    __slots__ = ("collection", "tenant", "max_vectors", "max_bytes")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    tenant: str
    max_vectors: int
    max_bytes: int
    def __init__(self, collection: _Optional[str] = ..., tenant: _Optional[str] = ..., max_vectors: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class UpdateTenantResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: TenantInfo
    def __init__(self, info: _Optional[_Union[TenantInfo, _Mapping]] = ...) -> None: ...

class SearchStats(_message.Message):
    __slots__ = ("queries", "heads_searched", "postings_read", "blocks_read", "pages_read", "bytes_read", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    HEADS_SEARCHED_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_READ_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_READ_FIELD_NUMBER: _ClassVar[int]
    PAGES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    queries: int
    heads_searched: int
    postings_read: int
    blocks_read: int
    pages_read: int
    bytes_read: int
    extra: _containers.ScalarMap[str, float]
    def __init__(self, queries: _Optional[int] = ..., heads_searched: _Optional[int] = ..., postings_read: _Optional[int] = ..., blocks_read: _Optional[int] = ..., pages_read: _Optional[int] = ..., bytes_read: _Optional[int] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetRouteRequest(_message.Message):
    __slots__ = ("collection", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetRouteResponse(_message.Message):
    __slots__ = ("shards", "addresses", "epoch")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedScalarFieldContainer[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    def __init__(self, shards: _Optional[_Iterable[int]] = ..., addresses: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ...) -> None: ...
