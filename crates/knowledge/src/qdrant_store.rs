//! The scale backend: a Qdrant server or cluster through qdrant-client,
//! with the same collection layout as the embedded store.

use super::VectorStoreError;
use super::layout::{self, ChunkPoint, HybridQuery, Scope, ScoredChunk, field};
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, GetPointsBuilder, Modifier, NamedVectors,
    PointStruct, PrefetchQueryBuilder, Query, QueryPointsBuilder, RrfBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector,
    VectorInput, VectorParamsBuilder, VectorsConfigBuilder, vectors_config,
};

pub struct QdrantStore {
    client: Qdrant,
    collection: String,
    url: String,
    layout: ClusterLayout,
}

/// How a new collection is spread over a Qdrant cluster (Qdrant's own
/// defaults where unset: one shard, no replica).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLayout {
    /// Shards the collection is split into (`shard_number`).
    #[serde(default)]
    pub shards: Option<u32>,
    /// Copies of each shard on different nodes (`replication_factor`).
    #[serde(default)]
    pub replication: Option<u32>,
    /// Replicas that must confirm a write (`write_consistency_factor`).
    #[serde(default)]
    pub write_consistency: Option<u32>,
}

fn err(context: &'static str) -> impl Fn(qdrant_client::QdrantError) -> VectorStoreError {
    move |e| VectorStoreError::Backend(format!("{context}: {e}"))
}

impl QdrantStore {
    /// Creates the collection (and keyword indexes) if missing; an existing
    /// collection must have the embedder's dimension.
    pub async fn ensure(&self, dim: usize) -> Result<(), VectorStoreError> {
        if self.exists().await? {
            self.check_dim(dim).await
        } else {
            self.create(dim).await
        }
    }

    /// A client for the collection, which may not exist yet.
    pub fn connect(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        timeout: std::time::Duration,
        layout: ClusterLayout,
    ) -> Result<Self, VectorStoreError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(err("cannot configure the Qdrant client"))?;
        Ok(QdrantStore {
            client,
            collection: collection.to_string(),
            url: url.to_string(),
            layout,
        })
    }

    async fn exists(&self) -> Result<bool, VectorStoreError> {
        self.client
            .collection_exists(&self.collection)
            .await
            .map_err(|e| VectorStoreError::Unavailable(format!("Qdrant at {}: {e}", self.url)))
    }

    async fn create(&self, dim: usize) -> Result<(), VectorStoreError> {
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            layout::DENSE,
            VectorParamsBuilder::new(dim as u64, Distance::Cosine),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            layout::SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
        );
        let mut create = CreateCollectionBuilder::new(&self.collection)
            .vectors_config(vectors)
            .sparse_vectors_config(sparse);
        if let Some(n) = self.layout.shards {
            create = create.shard_number(n);
        }
        if let Some(n) = self.layout.replication {
            create = create.replication_factor(n);
        }
        if let Some(n) = self.layout.write_consistency {
            create = create.write_consistency_factor(n);
        }
        self.client
            .create_collection(create)
            .await
            .map_err(err("cannot create the collection"))?;
        for name in layout::KEYWORD_FIELDS {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &self.collection,
                        *name,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(err("cannot index the payload"))?;
        }
        Ok(())
    }

    async fn check_dim(&self, dim: usize) -> Result<(), VectorStoreError> {
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(err("cannot read the collection"))?;
        let size = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|c| match c {
                vectors_config::Config::ParamsMap(m) => m.map.get(layout::DENSE).map(|p| p.size),
                vectors_config::Config::Params(_) => None,
            });
        match size {
            Some(s) if s as usize == dim => Ok(()),
            Some(s) => Err(VectorStoreError::Mismatch(format!(
                "collection `{}` holds {s}-dim vectors, the embedder makes {dim}; \
                 run `callpipe kb import --recreate ...`",
                self.collection
            ))),
            None => Err(VectorStoreError::Mismatch(format!(
                "collection `{}` has no `{}` vector: it was not made by callpipe",
                self.collection,
                layout::DENSE
            ))),
        }
    }

    pub fn summary(&self) -> String {
        format!("Qdrant at {} (collection {})", self.url, self.collection)
    }

    pub async fn destroy(&self) -> Result<(), VectorStoreError> {
        for name in [self.collection.clone(), self.meta_collection()] {
            let exists = self.client.collection_exists(&name).await.map_err(|e| {
                VectorStoreError::Unavailable(format!("Qdrant at {}: {e}", self.url))
            })?;
            if exists {
                self.client
                    .delete_collection(&name)
                    .await
                    .map_err(err("cannot delete the collection"))?;
            }
        }
        Ok(())
    }

    /// Documents kept with the collection (its fitted calibration) live in a
    /// small companion collection, so every host sharing the server sees them.
    fn meta_collection(&self) -> String {
        format!("{}-callpipe-meta", self.collection)
    }

    pub async fn load_meta(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VectorStoreError> {
        let meta = self.meta_collection();
        let exists =
            self.client.collection_exists(&meta).await.map_err(|e| {
                VectorStoreError::Unavailable(format!("Qdrant at {}: {e}", self.url))
            })?;
        if !exists {
            return Ok(None);
        }
        let got = self
            .client
            .get_points(GetPointsBuilder::new(&meta, vec![meta_id(name).into()]).with_payload(true))
            .await
            .map_err(err("cannot read the collection's documents"))?;
        Ok(got.result.into_iter().next().and_then(|p| {
            let map: serde_json::Map<String, serde_json::Value> =
                qdrant_client::Payload::from(p.payload).into();
            map.get("value").cloned()
        }))
    }

    pub async fn save_meta(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), VectorStoreError> {
        let meta = self.meta_collection();
        let exists =
            self.client.collection_exists(&meta).await.map_err(|e| {
                VectorStoreError::Unavailable(format!("Qdrant at {}: {e}", self.url))
            })?;
        if !exists {
            self.client
                .create_collection(
                    CreateCollectionBuilder::new(&meta)
                        .vectors_config(VectorParamsBuilder::new(1, Distance::Dot)),
                )
                .await
                .map_err(err("cannot create the documents collection"))?;
        }
        let payload: qdrant_client::Payload = serde_json::json!({ "value": value })
            .try_into()
            .map_err(|e| VectorStoreError::Backend(format!("bad document: {e}")))?;
        self.client
            .upsert_points(
                UpsertPointsBuilder::new(
                    &meta,
                    vec![PointStruct::new(meta_id(name), vec![1.0f32], payload)],
                )
                .wait(true),
            )
            .await
            .map_err(err("cannot store the document"))?;
        Ok(())
    }

    /// Every article's first chunk (its payload holds the whole article).
    pub async fn articles(
        &self,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, VectorStoreError> {
        let mut out = Vec::new();
        let first_chunks = || {
            qdrant_client::qdrant::ScrollPointsBuilder::new(&self.collection)
                .filter(Filter::must([Condition::matches(field::CHUNK, 0i64)]))
                .with_payload(true)
        };
        self.scroll_all(first_chunks, |page| {
            out.extend(
                page.into_iter()
                    .map(|p| qdrant_client::Payload::from(p.payload).into()),
            )
        })
        .await?;
        Ok(out)
    }

    /// Every point `request` selects, a page of 256 at a time.
    async fn scroll_all(
        &self,
        request: impl Fn() -> qdrant_client::qdrant::ScrollPointsBuilder,
        mut each: impl FnMut(Vec<qdrant_client::qdrant::RetrievedPoint>),
    ) -> Result<(), VectorStoreError> {
        let mut offset: Option<qdrant_client::qdrant::PointId> = None;
        loop {
            let mut page = request().limit(256);
            if let Some(o) = offset.take() {
                page = page.offset(o);
            }
            let got = self
                .client
                .scroll(page)
                .await
                .map_err(err("cannot read the collection"))?;
            each(got.result);
            match got.next_page_offset {
                Some(n) => offset = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// The sum of every chunk's dense vector, and how many there are.
    pub async fn dense_sum(&self) -> Result<(Vec<f64>, usize), VectorStoreError> {
        let mut sum: Vec<f64> = Vec::new();
        let mut count = 0usize;
        let vectors = || {
            qdrant_client::qdrant::ScrollPointsBuilder::new(&self.collection)
                .with_payload(false)
                .with_vectors(dense_only())
        };
        self.scroll_all(vectors, |page| {
            for v in page
                .iter()
                .filter_map(|p| p.vectors.as_ref().and_then(dense_of))
            {
                count += usize::from(layout::add_to(&mut sum, &v));
            }
        })
        .await?;
        Ok((sum, count))
    }

    pub async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), VectorStoreError> {
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| {
                let vectors = NamedVectors::default()
                    .add_vector(layout::DENSE, Vector::new_dense(p.dense))
                    .add_vector(
                        layout::SPARSE,
                        Vector::new_sparse(p.sparse.indices, p.sparse.values),
                    );
                PointStruct::new(p.id.to_string(), vectors, p.payload)
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(err("cannot store the chunks"))?;
        Ok(())
    }

    /// Deletes the article's chunks that do not carry `keep_hash` (what an
    /// update left of the old version), after the new chunks are stored.
    pub async fn delete_stale(
        &self,
        article_id: &str,
        keep_hash: &str,
    ) -> Result<(), VectorStoreError> {
        let mut filter = Filter::must([Condition::matches(
            field::ARTICLE_ID,
            article_id.to_string(),
        )]);
        filter.must_not = vec![Condition::matches(
            field::CONTENT_HASH,
            keep_hash.to_string(),
        )];
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(filter)
                    .wait(true),
            )
            .await
            .map_err(err("cannot delete the article's old chunks"))?;
        Ok(())
    }

    pub async fn stored(
        &self,
        article_id: &str,
        chunks: usize,
    ) -> Result<Option<layout::Stored>, VectorStoreError> {
        let first = layout::point_id(article_id, 0).to_string();
        let past = layout::point_id(article_id, chunks).to_string();
        let ids = vec![first.clone().into(), past.clone().into()];
        let got = self
            .client
            .get_points(GetPointsBuilder::new(&self.collection, ids).with_payload(true))
            .await
            .map_err(err("cannot read the collection"))?;
        let is = |p: &qdrant_client::qdrant::RetrievedPoint, id: &str| {
            matches!(
                p.id.as_ref().and_then(|i| i.point_id_options.as_ref()),
                Some(qdrant_client::qdrant::point_id::PointIdOptions::Uuid(u)) if u == id
            )
        };
        let leftover = got.result.iter().any(|p| is(p, &past));
        let hash = got
            .result
            .into_iter()
            .find(|p| is(p, &first))
            .and_then(|p| {
                let map: serde_json::Map<String, serde_json::Value> =
                    qdrant_client::Payload::from(p.payload).into();
                map.get(field::CONTENT_HASH).cloned()
            });
        Ok(layout::stored(hash.as_ref(), leftover))
    }

    pub async fn query(&self, q: HybridQuery) -> Result<Vec<ScoredChunk>, VectorStoreError> {
        let filter = scope_filter(&q.scope);
        let side = |name: &str, input: VectorInput| {
            let mut p = PrefetchQueryBuilder::default()
                .query(Query::new_nearest(input))
                .using(name)
                .limit(q.prefetch as u64);
            if let Some(f) = &filter {
                p = p.filter(f.clone());
            }
            p
        };
        let request = QueryPointsBuilder::new(&self.collection)
            .add_prefetch(side(layout::DENSE, VectorInput::new_dense(q.dense.clone())))
            .add_prefetch(side(
                layout::SPARSE,
                VectorInput::new_sparse(q.sparse.indices.clone(), q.sparse.values.clone()),
            ))
            .query(Query::new_rrf(
                RrfBuilder::with_k(super::RRF_K as u32).weights(q.weights.to_vec()),
            ))
            .limit(q.limit as u64)
            .with_payload(true);
        self.run_query(request).await
    }

    async fn run_query(
        &self,
        request: impl Into<qdrant_client::qdrant::QueryPoints>,
    ) -> Result<Vec<ScoredChunk>, VectorStoreError> {
        let got = self
            .client
            .query(request)
            .await
            .map_err(|e| VectorStoreError::Unavailable(format!("search failed: {e}")))?;
        Ok(got
            .result
            .into_iter()
            .map(|p| ScoredChunk {
                score: p.score,
                dense: p.vectors.as_ref().and_then(dense_of).unwrap_or_default(),
                payload: qdrant_client::Payload::from(p.payload).into(),
            })
            .collect())
    }

    /// Dense-only nearest chunks (cosine scores).
    pub async fn nearest(
        &self,
        dense: Vec<f32>,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<ScoredChunk>, VectorStoreError> {
        let mut request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(VectorInput::new_dense(dense)))
            .using(layout::DENSE)
            .limit(limit as u64)
            .with_payload(true)
            .with_vectors(dense_only());
        if let Some(filter) = scope_filter(&scope) {
            request = request.filter(filter);
        }
        self.run_query(request).await
    }

    pub async fn counts(&self) -> Result<(usize, usize), VectorStoreError> {
        let all = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(err("cannot count"))?;
        let firsts = self
            .client
            .count(
                CountPointsBuilder::new(&self.collection)
                    .exact(true)
                    .filter(Filter::must([Condition::matches(field::CHUNK, 0i64)])),
            )
            .await
            .map_err(err("cannot count"))?;
        let n = |r: qdrant_client::qdrant::CountResponse| {
            r.result.map(|c| c.count as usize).unwrap_or(0)
        };
        Ok((n(all), n(firsts)))
    }
}

/// The same filter as the embedded store's, in the server's terms.
fn scope_filter(scope: &Scope) -> Option<Filter> {
    let must: Vec<Condition> = if scope.equipment.is_empty() {
        Vec::new()
    } else {
        vec![Condition::matches(
            field::EQUIPMENT,
            scope.equipment.clone(),
        )]
    };
    let mut not: Vec<Condition> = Vec::new();
    if !scope.exclude_articles.is_empty() {
        not.push(Condition::matches(
            field::ARTICLE_ID,
            scope.exclude_articles.clone(),
        ));
    }
    for (article, chunk) in &scope.exclude_chunks {
        not.push(
            Filter::must([
                Condition::matches(field::ARTICLE_ID, article.clone()),
                Condition::matches(field::CHUNK, *chunk as i64),
            ])
            .into(),
        );
    }
    if must.is_empty() && not.is_empty() {
        return None;
    }
    Some(Filter {
        must,
        must_not: not,
        ..Default::default()
    })
}

fn meta_id(name: &str) -> String {
    layout::point_id(&format!("callpipe-meta:{name}"), 0).to_string()
}

fn dense_only() -> qdrant_client::qdrant::VectorsSelector {
    qdrant_client::qdrant::VectorsSelector {
        names: vec![layout::DENSE.to_string()],
    }
}

/// The dense vector among a point's vectors.
fn dense_of(v: &qdrant_client::qdrant::VectorsOutput) -> Option<Vec<f32>> {
    match v.get_vector_by_name(layout::DENSE)? {
        qdrant_client::qdrant::vector_output::Vector::Dense(d) => Some(d.data),
        _ => None,
    }
}
