//! A Qdrant server stand-in for fault tests: the gRPC services the store
//! uses (collections, and points by id and by keyword/integer filter),
//! kept in memory, with a switch that fails the next call of an operation.
//! Searches are not served: a real Qdrant server ranks
//! (`qdrant_server_backend`); this one only keeps what it is told, so a
//! test can see exactly what an interrupted import left behind.

use ::qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use ::qdrant_client::qdrant::condition::ConditionOneOf;
use ::qdrant_client::qdrant::r#match::MatchValue;
use ::qdrant_client::qdrant::point_id::PointIdOptions;
use ::qdrant_client::qdrant::points_selector::PointsSelectorOneOf;
use ::qdrant_client::qdrant::points_server::{Points, PointsServer};
use ::qdrant_client::qdrant::value::Kind;
use ::qdrant_client::qdrant::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

type Payload = HashMap<String, Value>;

#[derive(Default)]
struct Collection {
    config: Option<CollectionConfig>,
    points: BTreeMap<String, Payload>,
}

#[derive(Clone, Default)]
pub struct StandIn {
    collections: Arc<Mutex<HashMap<String, Collection>>>,
    /// Operation name -> how many of its next calls fail.
    failing: Arc<Mutex<HashMap<&'static str, usize>>>,
}

impl StandIn {
    /// Serves on a local port; returns the gRPC URL.
    pub async fn start() -> (String, StandIn) {
        let stand = StandIn::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(CollectionsServer::new(stand.clone()))
            .add_service(PointsServer::new(stand.clone()));
        tokio::spawn(server.serve_with_incoming(incoming));
        (url, stand)
    }

    /// The next `times` calls of `op` (`upsert`, `delete`) fail as if the
    /// server were away (the client tries a request twice on `unavailable`).
    pub fn fail(&self, op: &'static str, times: usize) {
        *self.failing.lock().unwrap().entry(op).or_default() += times;
    }

    /// Failures asked for and not yet served (a test checks none is left
    /// over for its next step).
    pub fn failures_left(&self) -> usize {
        self.failing.lock().unwrap().values().sum()
    }

    /// Every stored point's payload in `collection`, by point id.
    pub fn points(&self, collection: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let all = self.collections.lock().unwrap();
        all.get(collection)
            .map(|c| {
                c.points
                    .values()
                    .map(|p| ::qdrant_client::Payload::from(p.clone()).into())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check(&self, op: &'static str) -> Result<(), Status> {
        let mut failing = self.failing.lock().unwrap();
        match failing.get_mut(op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(Status::unavailable(format!(
                    "stand-in: {op} failed on purpose"
                )))
            }
            _ => Ok(()),
        }
    }

    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Collection) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut all = self.collections.lock().unwrap();
        let c = all
            .get_mut(name)
            .ok_or_else(|| Status::not_found(format!("no collection {name}")))?;
        f(c)
    }
}

fn id_key(id: &Option<PointId>) -> Result<String, Status> {
    match id.as_ref().and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Uuid(u)) => Ok(u.clone()),
        Some(PointIdOptions::Num(n)) => Ok(n.to_string()),
        None => Err(Status::invalid_argument("a point without an id")),
    }
}

fn point_id(key: &str) -> PointId {
    PointId {
        point_id_options: Some(PointIdOptions::Uuid(key.to_string())),
    }
}

/// The filters the store sends: keyword and integer matches, nested, in
/// `must` and `must_not`. Anything else is refused, so a store that starts
/// using more is noticed here rather than answered wrongly.
fn matches(filter: &Filter, payload: &Payload) -> Result<bool, Status> {
    if !filter.should.is_empty() || filter.min_should.is_some() {
        return Err(Status::unimplemented("stand-in: `should` filters"));
    }
    for c in &filter.must {
        if !condition(c, payload)? {
            return Ok(false);
        }
    }
    for c in &filter.must_not {
        if condition(c, payload)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn condition(c: &Condition, payload: &Payload) -> Result<bool, Status> {
    match &c.condition_one_of {
        Some(ConditionOneOf::Filter(f)) => matches(f, payload),
        Some(ConditionOneOf::Field(field)) => {
            let value = payload.get(&field.key).and_then(|v| v.kind.as_ref());
            let wanted = field
                .r#match
                .as_ref()
                .and_then(|m| m.match_value.as_ref())
                .ok_or_else(|| {
                    Status::unimplemented("stand-in: field conditions other than match")
                })?;
            // A list payload (equipment) matches when any element does.
            let values: Vec<&Kind> = match value {
                Some(Kind::ListValue(list)) => {
                    list.values.iter().filter_map(|v| v.kind.as_ref()).collect()
                }
                Some(k) => vec![k],
                None => vec![],
            };
            Ok(values.iter().any(|k| match (wanted, k) {
                (MatchValue::Keyword(w), Kind::StringValue(s)) => w == s,
                (MatchValue::Keywords(w), Kind::StringValue(s)) => w.strings.contains(s),
                (MatchValue::Integer(w), Kind::IntegerValue(i)) => w == i,
                (MatchValue::Integer(w), Kind::DoubleValue(d)) => *w as f64 == *d,
                _ => false,
            }))
        }
        _ => Err(Status::unimplemented("stand-in: this condition")),
    }
}

fn retrieved(key: &str, payload: &Payload) -> RetrievedPoint {
    RetrievedPoint {
        id: Some(point_id(key)),
        payload: payload.clone(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Collections for StandIn {
    async fn get(
        &self,
        r: Request<GetCollectionInfoRequest>,
    ) -> Result<Response<GetCollectionInfoResponse>, Status> {
        let name = r.into_inner().collection_name;
        let config = self.with(&name, |c| Ok(c.config.clone()))?;
        Ok(Response::new(GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                config,
                ..Default::default()
            }),
            time: 0.0,
        }))
    }
    async fn create(
        &self,
        r: Request<CreateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let r = r.into_inner();
        let config = CollectionConfig {
            params: Some(CollectionParams {
                vectors_config: r.vectors_config,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut all = self.collections.lock().unwrap();
        if all.contains_key(&r.collection_name) {
            return Err(Status::already_exists(r.collection_name));
        }
        all.insert(
            r.collection_name,
            Collection {
                config: Some(config),
                points: BTreeMap::new(),
            },
        );
        Ok(Response::new(CollectionOperationResponse {
            result: true,
            time: 0.0,
        }))
    }
    async fn delete(
        &self,
        r: Request<DeleteCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let gone = self
            .collections
            .lock()
            .unwrap()
            .remove(&r.into_inner().collection_name);
        Ok(Response::new(CollectionOperationResponse {
            result: gone.is_some(),
            time: 0.0,
        }))
    }
    async fn collection_exists(
        &self,
        r: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, Status> {
        let exists = self
            .collections
            .lock()
            .unwrap()
            .contains_key(&r.into_inner().collection_name);
        Ok(Response::new(CollectionExistsResponse {
            result: Some(CollectionExists { exists }),
            time: 0.0,
        }))
    }
    async fn list(
        &self,
        _: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn update(
        &self,
        _: Request<UpdateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn update_aliases(
        &self,
        _: Request<ChangeAliases>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_collection_aliases(
        &self,
        _: Request<ListCollectionAliasesRequest>,
    ) -> Result<Response<ListAliasesResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_aliases(
        &self,
        _: Request<ListAliasesRequest>,
    ) -> Result<Response<ListAliasesResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn collection_cluster_info(
        &self,
        _: Request<CollectionClusterInfoRequest>,
    ) -> Result<Response<CollectionClusterInfoResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn update_collection_cluster_setup(
        &self,
        _: Request<UpdateCollectionClusterSetupRequest>,
    ) -> Result<Response<UpdateCollectionClusterSetupResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn create_shard_key(
        &self,
        _: Request<CreateShardKeyRequest>,
    ) -> Result<Response<CreateShardKeyResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn delete_shard_key(
        &self,
        _: Request<DeleteShardKeyRequest>,
    ) -> Result<Response<DeleteShardKeyResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_shard_keys(
        &self,
        _: Request<ListShardKeysRequest>,
    ) -> Result<Response<ListShardKeysResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

fn updated() -> Response<PointsOperationResponse> {
    Response::new(PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: None,
            status: UpdateStatus::Completed as i32,
        }),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl Points for StandIn {
    async fn upsert(
        &self,
        r: Request<UpsertPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let r = r.into_inner();
        if !r.collection_name.ends_with("-callpipe-meta") {
            self.check("upsert")?;
        }
        self.with(&r.collection_name, |c| {
            // All or nothing, as one request to one shard is.
            let mut batch = Vec::with_capacity(r.points.len());
            for p in r.points {
                batch.push((id_key(&p.id)?, p.payload));
            }
            c.points.extend(batch);
            Ok(())
        })?;
        Ok(updated())
    }
    async fn delete(
        &self,
        r: Request<DeletePoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let r = r.into_inner();
        self.check("delete")?;
        let selector = r.points.and_then(|p| p.points_selector_one_of);
        self.with(&r.collection_name, |c| {
            match selector {
                Some(PointsSelectorOneOf::Filter(f)) => {
                    let mut keep = BTreeMap::new();
                    for (k, p) in std::mem::take(&mut c.points) {
                        if !matches(&f, &p)? {
                            keep.insert(k, p);
                        }
                    }
                    c.points = keep;
                }
                Some(PointsSelectorOneOf::Points(ids)) => {
                    for id in ids.ids {
                        c.points.remove(&id_key(&Some(id))?);
                    }
                }
                None => return Err(Status::invalid_argument("delete without a selector")),
            }
            Ok(())
        })?;
        Ok(updated())
    }
    async fn get(&self, r: Request<GetPoints>) -> Result<Response<GetResponse>, Status> {
        let r = r.into_inner();
        let result = self.with(&r.collection_name, |c| {
            let mut out = Vec::new();
            for id in &r.ids {
                let key = id_key(&Some(id.clone()))?;
                if let Some(p) = c.points.get(&key) {
                    out.push(retrieved(&key, p));
                }
            }
            Ok(out)
        })?;
        Ok(Response::new(GetResponse {
            result,
            ..Default::default()
        }))
    }
    async fn scroll(&self, r: Request<ScrollPoints>) -> Result<Response<ScrollResponse>, Status> {
        let r = r.into_inner();
        let result = self.with(&r.collection_name, |c| {
            let mut out = Vec::new();
            for (k, p) in &c.points {
                if r.filter.as_ref().map_or(Ok(true), |f| matches(f, p))? {
                    out.push(retrieved(k, p));
                }
            }
            Ok(out)
        })?;
        Ok(Response::new(ScrollResponse {
            result,
            ..Default::default()
        }))
    }
    async fn count(&self, r: Request<CountPoints>) -> Result<Response<CountResponse>, Status> {
        let r = r.into_inner();
        let count = self.with(&r.collection_name, |c| {
            let mut n = 0;
            for p in c.points.values() {
                if r.filter.as_ref().map_or(Ok(true), |f| matches(f, p))? {
                    n += 1;
                }
            }
            Ok(n)
        })?;
        Ok(Response::new(CountResponse {
            result: Some(CountResult { count }),
            ..Default::default()
        }))
    }
    async fn create_field_index(
        &self,
        r: Request<CreateFieldIndexCollection>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        self.with(&r.into_inner().collection_name, |_| Ok(()))?;
        Ok(updated())
    }
    async fn update_vectors(
        &self,
        _: Request<UpdatePointVectors>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: update_vectors"))
    }
    async fn delete_vectors(
        &self,
        _: Request<DeletePointVectors>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: delete_vectors"))
    }
    async fn set_payload(
        &self,
        _: Request<SetPayloadPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: set_payload"))
    }
    async fn overwrite_payload(
        &self,
        _: Request<SetPayloadPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: overwrite_payload"))
    }
    async fn delete_payload(
        &self,
        _: Request<DeletePayloadPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: delete_payload"))
    }
    async fn clear_payload(
        &self,
        _: Request<ClearPayloadPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: clear_payload"))
    }
    async fn delete_field_index(
        &self,
        _: Request<DeleteFieldIndexCollection>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: delete_field_index"))
    }
    async fn create_vector_name(
        &self,
        _: Request<CreateVectorNameRequest>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: create_vector_name"))
    }
    async fn delete_vector_name(
        &self,
        _: Request<DeleteVectorNameRequest>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        Err(Status::unimplemented("stand-in: delete_vector_name"))
    }
    async fn search(&self, _: Request<SearchPoints>) -> Result<Response<SearchResponse>, Status> {
        Err(Status::unimplemented("stand-in: search"))
    }
    async fn search_batch(
        &self,
        _: Request<SearchBatchPoints>,
    ) -> Result<Response<SearchBatchResponse>, Status> {
        Err(Status::unimplemented("stand-in: search_batch"))
    }
    async fn search_groups(
        &self,
        _: Request<SearchPointGroups>,
    ) -> Result<Response<SearchGroupsResponse>, Status> {
        Err(Status::unimplemented("stand-in: search_groups"))
    }
    async fn recommend(
        &self,
        _: Request<RecommendPoints>,
    ) -> Result<Response<RecommendResponse>, Status> {
        Err(Status::unimplemented("stand-in: recommend"))
    }
    async fn recommend_batch(
        &self,
        _: Request<RecommendBatchPoints>,
    ) -> Result<Response<RecommendBatchResponse>, Status> {
        Err(Status::unimplemented("stand-in: recommend_batch"))
    }
    async fn recommend_groups(
        &self,
        _: Request<RecommendPointGroups>,
    ) -> Result<Response<RecommendGroupsResponse>, Status> {
        Err(Status::unimplemented("stand-in: recommend_groups"))
    }
    async fn discover(
        &self,
        _: Request<DiscoverPoints>,
    ) -> Result<Response<DiscoverResponse>, Status> {
        Err(Status::unimplemented("stand-in: discover"))
    }
    async fn discover_batch(
        &self,
        _: Request<DiscoverBatchPoints>,
    ) -> Result<Response<DiscoverBatchResponse>, Status> {
        Err(Status::unimplemented("stand-in: discover_batch"))
    }
    async fn update_batch(
        &self,
        _: Request<UpdateBatchPoints>,
    ) -> Result<Response<UpdateBatchResponse>, Status> {
        Err(Status::unimplemented("stand-in: update_batch"))
    }
    async fn query(&self, _: Request<QueryPoints>) -> Result<Response<QueryResponse>, Status> {
        Err(Status::unimplemented("stand-in: query"))
    }
    async fn query_batch(
        &self,
        _: Request<QueryBatchPoints>,
    ) -> Result<Response<QueryBatchResponse>, Status> {
        Err(Status::unimplemented("stand-in: query_batch"))
    }
    async fn query_groups(
        &self,
        _: Request<QueryPointGroups>,
    ) -> Result<Response<QueryGroupsResponse>, Status> {
        Err(Status::unimplemented("stand-in: query_groups"))
    }
    async fn facet(&self, _: Request<FacetCounts>) -> Result<Response<FacetResponse>, Status> {
        Err(Status::unimplemented("stand-in: facet"))
    }
    async fn search_matrix_pairs(
        &self,
        _: Request<SearchMatrixPoints>,
    ) -> Result<Response<SearchMatrixPairsResponse>, Status> {
        Err(Status::unimplemented("stand-in: search_matrix_pairs"))
    }
    async fn search_matrix_offsets(
        &self,
        _: Request<SearchMatrixPoints>,
    ) -> Result<Response<SearchMatrixOffsetsResponse>, Status> {
        Err(Status::unimplemented("stand-in: search_matrix_offsets"))
    }
}
