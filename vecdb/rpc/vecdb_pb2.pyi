from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vectors(_message.Message):
    __slots__ = ("dim", "count", "data")
    DIM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dim: int
    count: int
    data: bytes
    def __init__(self, dim: _Optional[int] = ..., count: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

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

class Ids(_message.Message):
    __slots__ = ("ints", "strs")
    INTS_FIELD_NUMBER: _ClassVar[int]
    STRS_FIELD_NUMBER: _ClassVar[int]
    ints: IntIds
    strs: StrIds
    def __init__(self, ints: _Optional[_Union[IntIds, _Mapping]] = ..., strs: _Optional[_Union[StrIds, _Mapping]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "dim", "metric", "kind", "id_type", "index", "count", "multi_tenant", "index_params_json", "indexed", "buffered", "index_state", "index_progress", "last_build_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MULTI_TENANT_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    INDEX_STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_BUILD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    kind: str
    id_type: str
    index: str
    count: int
    multi_tenant: bool
    index_params_json: str
    indexed: int
    buffered: int
    index_state: str
    index_progress: float
    last_build_seconds: float
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., kind: _Optional[str] = ..., id_type: _Optional[str] = ..., index: _Optional[str] = ..., count: _Optional[int] = ..., multi_tenant: _Optional[bool] = ..., index_params_json: _Optional[str] = ..., indexed: _Optional[int] = ..., buffered: _Optional[int] = ..., index_state: _Optional[str] = ..., index_progress: _Optional[float] = ..., last_build_seconds: _Optional[float] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dim", "metric", "id_type", "index", "index_params_json", "kind", "multi_tenant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MULTI_TENANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    id_type: str
    index: str
    index_params_json: str
    kind: str
    multi_tenant: bool
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., id_type: _Optional[str] = ..., index: _Optional[str] = ..., index_params_json: _Optional[str] = ..., kind: _Optional[str] = ..., multi_tenant: _Optional[bool] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: CollectionInfo
    def __init__(self, info: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("collection", "ids", "vectors", "payloads")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    vectors: Vectors
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

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

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("ids", "vectors", "payloads")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    ids: Ids
    vectors: Vectors
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ids: _Optional[_Union[Ids, _Mapping]] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: Ids
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("k", "filter_json", "params_json", "with_payload")
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    k: int
    filter_json: str
    params_json: str
    with_payload: bool
    def __init__(self, k: _Optional[int] = ..., filter_json: _Optional[str] = ..., params_json: _Optional[str] = ..., with_payload: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "query", "options")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: bytes
    options: SearchOptions
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[bytes] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("collection", "queries", "options")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: Vectors
    options: SearchOptions
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Union[Vectors, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("nq", "k", "ids", "distances", "found", "payloads", "with_payload")
    NQ_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    nq: int
    k: int
    ids: Ids
    distances: bytes
    found: _containers.RepeatedScalarFieldContainer[int]
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    with_payload: bool
    def __init__(self, nq: _Optional[int] = ..., k: _Optional[int] = ..., ids: _Optional[_Union[Ids, _Mapping]] = ..., distances: _Optional[bytes] = ..., found: _Optional[_Iterable[int]] = ..., payloads: _Optional[_Iterable[bytes]] = ..., with_payload: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("stats_json",)
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    stats_json: str
    def __init__(self, stats_json: _Optional[str] = ...) -> None: ...
