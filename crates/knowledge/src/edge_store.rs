//! The embedded backend: qdrant-edge, a Qdrant shard in a directory under
//! the data dir. Its calls block, so async callers go through spawn_blocking.

use super::VectorStoreError;
use super::layout::{self, ChunkPoint, HybridQuery, Scope, ScoredChunk, field};
use qdrant_edge::{
    Condition, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder,
    EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations, Filter, Fusion, JsonPath, Match,
    Modifier, NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, Prefetch, QueryEnum, QueryRequest, RetrieveRequest, ScoringQuery,
    UpdateOperation, Vector, Vectors, WithPayloadInterface,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Written beside the shard: what built it, so a different embedder is
/// caught before it mixes vectors of another space.
const META_FILE: &str = "callpipe-collection.json";

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Meta {
    dim: usize,
    embedder: String,
}

pub struct EdgeStore {
    shard: Arc<EdgeShard>,
    path: PathBuf,
    /// Held for the store's life: one process owns a shard directory.
    _lock: std::fs::File,
    /// Chunks stored since the indexes were last rebuilt.
    unoptimized: std::sync::atomic::AtomicUsize,
}

/// Chunks stored before `finish` rebuilds the indexes: one article added
/// through the API is flushed, not worth a rebuild of the whole store.
const OPTIMIZE_AFTER: usize = 128;

/// Stores open in this process, by directory: a second opener (a pipeline
/// reload, a test) shares the first one's shard instead of locking itself out.
static OPEN: std::sync::Mutex<Vec<(PathBuf, std::sync::Weak<EdgeStore>)>> =
    std::sync::Mutex::new(Vec::new());

const LOCK_FILE: &str = "callpipe.lock";

fn err(context: &str) -> impl Fn(qdrant_edge::OperationError) -> VectorStoreError + '_ {
    move |e| VectorStoreError::Backend(format!("{context}: {e}"))
}

impl EdgeStore {
    /// Opens the shard at `path` (shared within the process), creating it
    /// and its keyword indexes the first time.
    pub fn open(path: &Path, dim: usize, embedder: &str) -> Result<Arc<Self>, VectorStoreError> {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(store) = open
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, w)| w.upgrade())
        {
            Self::check_meta(path, dim, embedder)?;
            return Ok(store);
        }
        let store = Arc::new(Self::open_new(path, dim, embedder)?);
        open.push((path.to_path_buf(), Arc::downgrade(&store)));
        Ok(store)
    }

    fn check_meta(path: &Path, dim: usize, embedder: &str) -> Result<bool, VectorStoreError> {
        let meta_path = path.join(META_FILE);
        if !meta_path.exists() {
            return Ok(false);
        }
        let want = Meta {
            dim,
            embedder: embedder.to_string(),
        };
        let text = std::fs::read_to_string(&meta_path)
            .map_err(|e| VectorStoreError::Backend(format!("{}: {e}", meta_path.display())))?;
        let got: Meta = serde_json::from_str(&text)
            .map_err(|e| VectorStoreError::Backend(format!("{}: {e}", meta_path.display())))?;
        if got != want {
            return Err(VectorStoreError::Mismatch(format!(
                "{} was built by {} ({} dims), the pipeline now embeds with {} ({} dims); \
                 run `callpipe kb import --recreate ...`",
                path.display(),
                got.embedder,
                got.dim,
                want.embedder,
                want.dim
            )));
        }
        Ok(true)
    }

    fn lock(path: &Path) -> Result<std::fs::File, VectorStoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| VectorStoreError::Backend(format!("{}: {e}", path.display())))?;
        let lock_path = path.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VectorStoreError::Backend(format!("{}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(VectorStoreError::Unavailable(format!(
                "{} is in use by another callpipe process (a running `serve`?); \
                 stop it first, or use a Qdrant server for shared access",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(VectorStoreError::Backend(format!(
                "{}: {e}",
                lock_path.display()
            ))),
        }
    }

    fn open_new(path: &Path, dim: usize, embedder: &str) -> Result<Self, VectorStoreError> {
        let exists = Self::check_meta(path, dim, embedder)?;
        let lock = Self::lock(path)?;
        let meta_path = path.join(META_FILE);
        let want = Meta {
            dim,
            embedder: embedder.to_string(),
        };
        let shard = if exists {
            EdgeShard::load(path, None).map_err(err("cannot open the knowledge store"))?
        } else {
            // A directory without our meta file holds no finished store
            // (an interrupted first open): start it afresh, keeping the lock.
            clear_except_lock(path)?;
            let config = EdgeConfigBuilder::new()
                .vector(
                    layout::DENSE,
                    EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
                )
                .sparse_vector(
                    layout::SPARSE,
                    EdgeSparseVectorParamsBuilder::new()
                        .modifier(Modifier::Idf)
                        .build(),
                )
                .build();
            let shard =
                EdgeShard::new(path, config).map_err(err("cannot create the knowledge store"))?;
            for name in layout::KEYWORD_FIELDS {
                shard
                    .update(UpdateOperation::FieldIndexOperation(
                        FieldIndexOperations::CreateIndex(CreateIndex {
                            field_name: json_path(name),
                            field_schema: Some(PayloadFieldSchema::FieldType(
                                PayloadSchemaType::Keyword,
                            )),
                        }),
                    ))
                    .map_err(err("cannot index the payload"))?;
            }
            let json = serde_json::to_string_pretty(&want).unwrap_or_default();
            std::fs::write(&meta_path, json)
                .map_err(|e| VectorStoreError::Backend(format!("{}: {e}", meta_path.display())))?;
            shard
        };
        Ok(EdgeStore {
            unoptimized: std::sync::atomic::AtomicUsize::new(OPTIMIZE_AFTER),
            shard: Arc::new(shard),
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn summary(&self) -> String {
        format!("embedded Qdrant at {}", self.path.display())
    }

    /// Deletes the shard (for `--recreate`); refused while it is open.
    pub fn destroy(path: &Path) -> Result<(), VectorStoreError> {
        if !path.exists() {
            return Ok(());
        }
        let open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if open.iter().any(|(p, w)| p == path && w.strong_count() > 0) {
            return Err(VectorStoreError::Unavailable(format!(
                "{} is open in this process",
                path.display()
            )));
        }
        let _lock = Self::lock(path)?;
        clear_except_lock(path)
    }

    pub async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), VectorStoreError> {
        self.unoptimized
            .fetch_add(points.len(), std::sync::atomic::Ordering::Relaxed);
        let shard = self.shard.clone();
        blocking(move || {
            let mut list = Vec::with_capacity(points.len());
            for p in points {
                let sparse = Vector::new_sparse(p.sparse.indices, p.sparse.values)
                    .map_err(err("bad sparse vector"))?;
                let vectors = Vectors::new_named([
                    (layout::DENSE, Vector::new_dense(p.dense)),
                    (layout::SPARSE, sparse),
                ]);
                let point = PointStruct::new(
                    PointId::Uuid(p.id),
                    vectors,
                    serde_json::Value::Object(p.payload),
                );
                list.push(point.into());
            }
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(list)),
                ))
                .map_err(err("cannot store the chunks"))
        })
        .await
    }

    /// Deletes the article's chunks that do not carry `keep_hash` (what an
    /// update left of the old version), after the new chunks are stored.
    pub async fn delete_stale(
        &self,
        article_id: &str,
        keep_hash: &str,
    ) -> Result<(), VectorStoreError> {
        let shard = self.shard.clone();
        let mut filter = Filter::new_must(keyword(field::ARTICLE_ID, article_id));
        filter.must_not = Some(vec![keyword(field::CONTENT_HASH, keep_hash)]);
        blocking(move || {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(err("cannot delete the article's old chunks"))
        })
        .await
    }

    /// The stored content hash of an article's first chunk.
    pub async fn stored(
        &self,
        article_id: &str,
        chunks: usize,
    ) -> Result<Option<layout::Stored>, VectorStoreError> {
        let shard = self.shard.clone();
        let first = PointId::Uuid(layout::point_id(article_id, 0));
        let past = PointId::Uuid(layout::point_id(article_id, chunks));
        blocking(move || {
            let records = shard
                .retrieve(RetrieveRequest {
                    point_ids: vec![first, past],
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: None,
                })
                .map_err(err("cannot read the store"))?;
            let hash = records
                .iter()
                .find(|r| r.id == first)
                .and_then(|r| r.payload.as_ref())
                .and_then(|p| p.0.get(field::CONTENT_HASH).cloned());
            let leftover = records.iter().any(|r| r.id == past);
            Ok(layout::stored(hash.as_ref(), leftover))
        })
        .await
    }

    pub async fn query(&self, q: HybridQuery) -> Result<Vec<ScoredChunk>, VectorStoreError> {
        let shard = self.shard.clone();
        blocking(move || {
            let filter = scope_filter(&q.scope);
            let side = |name: &str, vector: qdrant_edge::VectorInternal| {
                let mut p = Prefetch::new(q.prefetch);
                p.query = Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: vector,
                    using: Some(name.into()),
                })));
                p.filter = filter.clone();
                p
            };
            let sparse = qdrant_edge::SparseVector::new(q.sparse.indices, q.sparse.values)
                .map_err(|e| VectorStoreError::Backend(format!("bad sparse query: {e}")))?;
            let mut request = QueryRequest::new(q.limit);
            request.prefetches = vec![
                side(layout::DENSE, q.dense.into()),
                side(layout::SPARSE, sparse.into()),
            ];
            request.query = Some(ScoringQuery::Fusion(Fusion::Rrf {
                k: super::RRF_K,
                weights: Some(
                    q.weights
                        .iter()
                        .map(|&w| qdrant_edge::external::ordered_float::OrderedFloat(w))
                        .collect(),
                ),
            }));
            request.with_payload = WithPayloadInterface::Bool(true);
            run_query(&shard, request)
        })
        .await
    }

    /// Dense-only nearest chunks: their scores are cosine similarities,
    /// comparable across searches (the fused scores are rank-based).
    pub async fn nearest(
        &self,
        dense: Vec<f32>,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<ScoredChunk>, VectorStoreError> {
        let shard = self.shard.clone();
        blocking(move || {
            let mut request = QueryRequest::new(limit);
            request.query = Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: dense.into(),
                using: Some(layout::DENSE.into()),
            })));
            request.filter = scope_filter(&scope);
            request.with_payload = WithPayloadInterface::Bool(true);
            request.with_vector = dense_only();
            run_query(&shard, request)
        })
        .await
    }

    /// (chunks, articles)
    pub async fn counts(&self) -> Result<(usize, usize), VectorStoreError> {
        let shard = self.shard.clone();
        blocking(move || {
            let all = shard
                .count(qdrant_edge::CountRequest {
                    filter: None,
                    exact: true,
                })
                .map_err(err("cannot count"))?;
            let firsts = shard
                .count(qdrant_edge::CountRequest {
                    filter: Some(Filter::new_must(Condition::Field(
                        FieldCondition::new_match(json_path(field::CHUNK), Match::from(0i64)),
                    ))),
                    exact: true,
                })
                .map_err(err("cannot count"))?;
            Ok((all, firsts))
        })
        .await
    }

    /// Every article's first chunk (its payload holds the whole article).
    pub async fn articles(
        &self,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, VectorStoreError> {
        let shard = self.shard.clone();
        blocking(move || {
            let mut out = Vec::new();
            let first_chunks = Filter::new_must(Condition::Field(FieldCondition::new_match(
                json_path(field::CHUNK),
                Match::from(0i64),
            )));
            scroll_all(
                &shard,
                Some(first_chunks),
                true,
                qdrant_edge::WithVector::Bool(false),
                |page| out.extend(page.into_iter().filter_map(|r| r.payload.map(|p| p.0))),
            )?;
            Ok(out)
        })
        .await
    }

    /// The sum of every chunk's dense vector, and how many there are.
    pub async fn dense_sum(&self) -> Result<(Vec<f64>, usize), VectorStoreError> {
        let shard = self.shard.clone();
        blocking(move || {
            let mut sum: Vec<f64> = Vec::new();
            let mut count = 0usize;
            scroll_all(&shard, None, false, dense_only(), |page| {
                for v in page.into_iter().filter_map(|r| r.vector.and_then(dense_of)) {
                    count += usize::from(layout::add_to(&mut sum, &v));
                }
            })?;
            Ok((sum, count))
        })
        .await
    }

    /// A document kept with the store (its fitted calibration), by name.
    pub async fn load_meta(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VectorStoreError> {
        let path = self.path.join(format!("callpipe-{name}.json"));
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| VectorStoreError::Backend(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VectorStoreError::Backend(format!(
                "{}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes it whole or not at all (a temporary file renamed over it).
    pub async fn save_meta(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), VectorStoreError> {
        let path = self.path.join(format!("callpipe-{name}.json"));
        let tmp = self.path.join(format!(".callpipe-{name}.json.tmp"));
        let io = |e: std::io::Error| VectorStoreError::Backend(format!("{}: {e}", path.display()));
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| VectorStoreError::Backend(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Persists, and rebuilds the vector indexes once enough chunks were
    /// stored since the last rebuild (and at the first import of a process).
    pub async fn finish(&self) -> Result<(), VectorStoreError> {
        let shard = self.shard.clone();
        let optimize = self
            .unoptimized
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| (n >= OPTIMIZE_AFTER).then_some(0),
            )
            .is_ok();
        blocking(move || {
            if optimize {
                shard.optimize().map_err(err("cannot optimize the store"))?;
            }
            shard.flush().map_err(err("cannot flush the store"))
        })
        .await
    }
}

fn run_query(
    shard: &EdgeShard,
    request: QueryRequest,
) -> Result<Vec<ScoredChunk>, VectorStoreError> {
    let points = shard.query(request).map_err(err("search failed"))?;
    Ok(points
        .into_iter()
        .map(|p| ScoredChunk {
            score: p.score,
            payload: p.payload.map(|p| p.0).unwrap_or_default(),
            dense: p.vector.and_then(dense_of).unwrap_or_default(),
        })
        .collect())
}

/// Every point `filter` selects, a page of 256 at a time.
fn scroll_all(
    shard: &EdgeShard,
    filter: Option<Filter>,
    with_payload: bool,
    with_vector: qdrant_edge::WithVector,
    mut each: impl FnMut(Vec<qdrant_edge::Record>),
) -> Result<(), VectorStoreError> {
    let mut offset = None;
    loop {
        let (records, next) = shard
            .scroll(qdrant_edge::ScrollRequest {
                offset,
                limit: Some(256),
                filter: filter.clone(),
                with_payload: Some(WithPayloadInterface::Bool(with_payload)),
                with_vector: with_vector.clone(),
                order_by: None,
            })
            .map_err(err("cannot read the store"))?;
        each(records);
        match next {
            Some(n) => offset = Some(n),
            None => return Ok(()),
        }
    }
}

fn dense_only() -> qdrant_edge::WithVector {
    qdrant_edge::WithVector::Selector(vec![layout::DENSE.into()])
}

/// The dense vector among a point's vectors.
fn dense_of(v: qdrant_edge::VectorStructInternal) -> Option<Vec<f32>> {
    match v {
        qdrant_edge::VectorStructInternal::Named(mut named) => match named.remove(layout::DENSE)? {
            qdrant_edge::VectorInternal::Dense(d) => Some(d),
            _ => None,
        },
        qdrant_edge::VectorStructInternal::Single(d) => Some(d),
        _ => None,
    }
}

fn clear_except_lock(path: &Path) -> Result<(), VectorStoreError> {
    let io = |e: std::io::Error| VectorStoreError::Backend(format!("{}: {e}", path.display()));
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.file_name().is_some_and(|n| n == LOCK_FILE) {
            continue;
        }
        if p.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io)?;
        } else {
            std::fs::remove_file(&p).map_err(io)?;
        }
    }
    Ok(())
}

fn json_path(name: &str) -> JsonPath {
    // Only the layout's constant field names come here: plain identifiers.
    name.parse()
        .unwrap_or_else(|_| panic!("`{name}` is not a valid payload path"))
}

fn keyword(name: &str, value: &str) -> Condition {
    Condition::Field(FieldCondition::new_match(
        json_path(name),
        Match::from(value.to_string()),
    ))
}

fn scope_filter(scope: &Scope) -> Option<Filter> {
    let mut filter = Filter::new();
    if !scope.equipment.is_empty() {
        filter.must = Some(vec![Condition::Field(FieldCondition::new_match(
            json_path(field::EQUIPMENT),
            Match::from(scope.equipment.to_vec()),
        ))]);
    }
    let mut not: Vec<Condition> = Vec::new();
    if !scope.exclude_articles.is_empty() {
        not.push(Condition::Field(FieldCondition::new_match(
            json_path(field::ARTICLE_ID),
            Match::from(scope.exclude_articles.to_vec()),
        )));
    }
    for (article, chunk) in &scope.exclude_chunks {
        let mut both = Filter::new_must(keyword(field::ARTICLE_ID, article));
        both.must
            .get_or_insert_with(Vec::new)
            .push(Condition::Field(FieldCondition::new_match(
                json_path(field::CHUNK),
                Match::from(*chunk as i64),
            )));
        not.push(Condition::Filter(both));
    }
    if !not.is_empty() {
        filter.must_not = Some(not);
    }
    (filter != Filter::new()).then_some(filter)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorStoreError> + Send + 'static,
) -> Result<T, VectorStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VectorStoreError::Backend(format!("store task failed: {e}")))?
}
