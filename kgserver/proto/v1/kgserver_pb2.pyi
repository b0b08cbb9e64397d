from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Query(_message.Message):
    __slots__ = ("entity", "relation")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    entity: str
    relation: str
    def __init__(self, entity: _Optional[str] = ..., relation: _Optional[str] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "queries", "k", "filter_known", "language")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_KNOWN_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    k: int
    filter_known: bool
    language: str
    def __init__(self, model: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., k: _Optional[int] = ..., filter_known: _Optional[bool] = ..., language: _Optional[str] = ...) -> None: ...

class ScoredEntity(_message.Message):
    __slots__ = ("entity", "score", "label", "new_entity")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    NEW_ENTITY_FIELD_NUMBER: _ClassVar[int]
    entity: str
    score: float
    label: str
    new_entity: bool
    def __init__(self, entity: _Optional[str] = ..., score: _Optional[float] = ..., label: _Optional[str] = ..., new_entity: _Optional[bool] = ...) -> None: ...

class Predictions(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[ScoredEntity]
    def __init__(self, entities: _Optional[_Iterable[_Union[ScoredEntity, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("results", "model_version", "store_revision")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Predictions]
    model_version: str
    store_revision: int
    def __init__(self, results: _Optional[_Iterable[_Union[Predictions, _Mapping]]] = ..., model_version: _Optional[str] = ..., store_revision: _Optional[int] = ...) -> None: ...

class Triple(_message.Message):
    __slots__ = ("head", "relation", "tail")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    head: str
    relation: str
    tail: str
    def __init__(self, head: _Optional[str] = ..., relation: _Optional[str] = ..., tail: _Optional[str] = ...) -> None: ...

class ScoreTriplesRequest(_message.Message):
    __slots__ = ("model", "triples")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRIPLES_FIELD_NUMBER: _ClassVar[int]
    model: str
    triples: _containers.RepeatedCompositeFieldContainer[Triple]
    def __init__(self, model: _Optional[str] = ..., triples: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ...) -> None: ...

class ScoreTriplesResponse(_message.Message):
    __slots__ = ("scores", "model_version", "store_revision")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    store_revision: int
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ..., store_revision: _Optional[int] = ...) -> None: ...

class GetEntityEmbeddingsRequest(_message.Message):
    __slots__ = ("model", "entities")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    model: str
    entities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., entities: _Optional[_Iterable[str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("entity", "values")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    entity: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, entity: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class GetEntityEmbeddingsResponse(_message.Message):
    __slots__ = ("embeddings", "model_version", "store_revision")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model_version: str
    store_revision: int
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model_version: _Optional[str] = ..., store_revision: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "plugin", "num_entities", "num_relations", "embedding_dim", "is_default", "graph")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    NUM_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    NUM_RELATIONS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    plugin: str
    num_entities: int
    num_relations: int
    embedding_dim: int
    is_default: bool
    graph: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., plugin: _Optional[str] = ..., num_entities: _Optional[int] = ..., num_relations: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., is_default: _Optional[bool] = ..., graph: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "max_k", "max_batch")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    max_k: int
    max_batch: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., max_k: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "triple", "k", "language")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRIPLE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    triple: Triple
    k: int
    language: str
    def __init__(self, model: _Optional[str] = ..., triple: _Optional[_Union[Triple, _Mapping]] = ..., k: _Optional[int] = ..., language: _Optional[str] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("triple", "weight", "head_label", "relation_label", "tail_label", "attention")
    TRIPLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEAD_LABEL_FIELD_NUMBER: _ClassVar[int]
    RELATION_LABEL_FIELD_NUMBER: _ClassVar[int]
    TAIL_LABEL_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    triple: Triple
    weight: float
    head_label: str
    relation_label: str
    tail_label: str
    attention: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, triple: _Optional[_Union[Triple, _Mapping]] = ..., weight: _Optional[float] = ..., head_label: _Optional[str] = ..., relation_label: _Optional[str] = ..., tail_label: _Optional[str] = ..., attention: _Optional[_Iterable[float]] = ...) -> None: ...

class EvidencePath(_message.Message):
    __slots__ = ("hops", "weight")
    HOPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    hops: _containers.RepeatedCompositeFieldContainer[Triple]
    weight: float
    def __init__(self, hops: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ..., weight: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("score", "rank", "evidence", "paths", "model_version", "store_revision", "method")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_REVISION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    score: float
    rank: int
    evidence: _containers.RepeatedCompositeFieldContainer[Evidence]
    paths: _containers.RepeatedCompositeFieldContainer[EvidencePath]
    model_version: str
    store_revision: int
    method: str
    def __init__(self, score: _Optional[float] = ..., rank: _Optional[int] = ..., evidence: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., paths: _Optional[_Iterable[_Union[EvidencePath, _Mapping]]] = ..., model_version: _Optional[str] = ..., store_revision: _Optional[int] = ..., method: _Optional[str] = ...) -> None: ...
