//! The knowledge base end to end on its real parts: the local multilingual
//! embedder (fetched by `callpipe models`), embedded Qdrant, and, when a
//! server is named, a Qdrant server with the same layout.

use callpipe_knowledge::article::{self, Article};
use callpipe_knowledge::embedder::EmbedderConfig;
use callpipe_knowledge::layout;
use callpipe_knowledge::{Backend, KnowledgeBase, KnowledgeConfig, Search};
use callpipe_testkit::{data_dir, fixture_present, root};
use std::path::{Path, PathBuf};

/// The shared 60-article test knowledge base (French and English).
const SHARED_KB: &str = "../shared/kb/articles.jsonl";

/// Recall floors of the labelled set (tests/kb-quality/queries.jsonl).
/// Measured values are in README.md; the floors only ever go up.
/// Measured 0.866 and 0.940 (67 queries); one query of slack each.
const FLOOR_RECALL_AT_1: f64 = 0.85;
const FLOOR_RECALL_AT_3: f64 = 0.92;

fn model_present() -> bool {
    let path =
        callpipe_knowledge::models::usem::path(&callpipe_knowledge::models::dir(&data_dir()))
            .join("weights.npz");
    fixture_present(
        path.exists(),
        &format!(
            "the embedding model at {} (run `callpipe models`)",
            path.display()
        ),
    )
}

fn shared_kb() -> Option<PathBuf> {
    let path = root().join(SHARED_KB);
    fixture_present(
        path.exists(),
        &format!("the shared knowledge base at {}", path.display()),
    )
    .then_some(path)
}

/// An embedded store in a fresh directory, embedding with the local model.
async fn open_embedded(dir: &Path) -> KnowledgeBase {
    embedded_config(dir)
        .open(&data_dir(), &root())
        .await
        .unwrap_or_else(|e| panic!("cannot open the store in {}: {e}", dir.display()))
}

fn embedded_config(dir: &Path) -> KnowledgeConfig {
    KnowledgeConfig {
        path: Some(dir.join("store")),
        ..KnowledgeConfig::default()
    }
}

fn read_all(path: &Path) -> Vec<Article> {
    article::collect(path)
        .unwrap()
        .iter()
        .flat_map(|f| article::read_file(f).unwrap())
        .collect()
}

async fn top(kb: &KnowledgeBase, query: &str, n: usize) -> Vec<String> {
    kb.search(&Search {
        query: query.into(),
        limit: n,
        ..Search::default()
    })
    .await
    .unwrap()
    .into_iter()
    .map(|h| h.article_id)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_round_trip_and_idempotent_import() {
    let Some(kb_file) = shared_kb() else { return };
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut articles = read_all(&kb_file);
    assert_eq!(articles.len(), 60);
    {
        let kb = open_embedded(dir.path()).await;
        let report = kb.import(&articles, |_| {}).await.unwrap();
        assert_eq!((report.added, report.updated, report.unchanged), (60, 0, 0));
        // The store fitted its own calibration on its own articles.
        let fitted = report
            .calibration
            .clone()
            .expect("a calibration fitted at import");
        assert_eq!(fitted.articles, 60);
        assert!(fitted.questions >= 120, "{fitted:?}");
        assert!(fitted.brier < 0.2 && fitted.ece < 0.15, "{fitted:?}");
        // Its features measure cosines from the mean of the store's chunks.
        assert_eq!(fitted.centre.as_ref().map(|c| c.dims()), Some(512));
        assert_eq!(
            kb.calibration().1,
            callpipe_knowledge::CalibrationSource::Store
        );
        let stats = kb.stats().await.unwrap();
        let chunks: usize = articles.iter().map(|a| layout::chunks(a).len()).sum();
        assert_eq!((stats.articles, stats.chunks, stats.dim), (60, chunks, 512));

        let hits = kb
            .search(&Search {
                query: "la caméra ne répond plus au ping".into(),
                limit: 3,
                ..Search::default()
            })
            .await
            .unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].article_id, "kb-001");
        assert!(hits[0].body.contains("ping"));
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

        // The equipment filter keeps only tagged articles.
        let alarm = kb
            .search(&Search {
                query: "la batterie est faible".into(),
                limit: 5,
                equipment: vec!["alarm-panel".into()],
                ..Search::default()
            })
            .await
            .unwrap();
        assert!(!alarm.is_empty());
        assert!(
            alarm
                .iter()
                .all(|h| h.equipment.iter().any(|e| e == "alarm-panel"))
        );

        // Importing the same articles again changes nothing, and keeps the fit.
        let again = kb.import(&articles, |_| {}).await.unwrap();
        assert_eq!((again.added, again.updated, again.unchanged), (0, 0, 60));
        assert!(again.calibration.is_none());
        assert_eq!(kb.fitted().as_ref(), Some(&fitted));

        // An edited article replaces its chunks; no duplicates appear.
        articles[6].title = "Image laiteuse la nuit : toile d'araignée sur l'objectif".into();
        let edited = kb.import(&articles[..10], |_| {}).await.unwrap();
        assert_eq!((edited.added, edited.updated, edited.unchanged), (0, 1, 9));
        let stats = kb.stats().await.unwrap();
        assert_eq!((stats.articles, stats.chunks), (60, chunks));
        let hits = top(&kb, "toile d'araignée sur l'objectif", 1).await;
        assert_eq!(hits, ["kb-007"]);

        // A shorter version (two symptoms fewer) replaces the old one whole:
        // its new chunks are stored before the old ones leave, and none of
        // the old ones stays behind.
        let dropped = articles[7].symptoms.len().min(2);
        let kept = articles[7].symptoms.len() - dropped;
        articles[7].symptoms.truncate(kept);
        let shorter = kb.import(&articles[7..8], |_| {}).await.unwrap();
        assert_eq!(shorter.updated, 1);
        let stats = kb.stats().await.unwrap();
        assert_eq!((stats.articles, stats.chunks), (60, chunks - dropped));
    }
    // The store survives a reopen (the shard is persisted, not in memory),
    // with the calibration it fitted.
    let kb = open_embedded(dir.path()).await;
    assert_eq!(kb.stats().await.unwrap().articles, 60);
    let kept = kb.fitted().expect("the calibration is kept with the store");
    assert_eq!(kept.articles, 60);
    assert_eq!(
        kb.calibration().1,
        callpipe_knowledge::CalibrationSource::Store
    );
}

/// A store's own calibration orders the same way on a small store and a
/// large one: a described fault gets a clearly higher confidence than an
/// off-topic question, on the 10-article sample KB as on the 60-article one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confidence_fits_itself_to_each_store() {
    let Some(kb_file) = shared_kb() else { return };
    if !model_present() {
        return;
    }
    for (articles, fault, expected) in [
        (
            read_all(&root().join("kb")),
            // Written from the articles, not from any evaluation phrasing
            // (tests/kb-quality/README.md).
            "l'appli mobile indique que le NVR n'est pas en ligne",
            "sample-006",
        ),
        (
            read_all(&kb_file),
            "on a lancé un essai de la centrale et la sirène n'émet aucun son",
            "kb-048",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let kb = open_embedded(dir.path()).await;
        kb.import(&articles, |_| {}).await.unwrap();
        let search = |q: &str| Search {
            query: q.into(),
            limit: 3,
            ..Search::default()
        };
        let hits = kb.search(&search(fault)).await.unwrap();
        assert_eq!(hits[0].article_id, expected, "{hits:?}");
        let off = kb
            .search(&search(
                "il faut que je pose mes congés pour la semaine prochaine",
            ))
            .await
            .unwrap();
        eprintln!(
            "{} articles: fault {:.2}, off-topic {:.2}",
            articles.len(),
            hits[0].confidence,
            off[0].confidence
        );
        // The store's own fit is strict (README, Answer quality): a fault
        // its articles answer is ranked above chatter they do not, by a
        // margin this test does not tune.
        assert!(
            hits[0].confidence > off[0].confidence,
            "{} articles: fault {:.2}, off-topic {:.2}",
            articles.len(),
            hits[0].confidence,
            off[0].confidence
        );
        assert!(
            off[0].confidence < 0.3,
            "off-topic: {:.2}",
            off[0].confidence
        );
    }
}

#[derive(serde::Deserialize)]
struct Labelled {
    kind: String,
    query: String,
    expected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_search_quality_floor() {
    let Some(kb_file) = shared_kb() else { return };
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kb = open_embedded(dir.path()).await;
    kb.import(&read_all(&kb_file), |_| {}).await.unwrap();

    let text = std::fs::read_to_string(root().join("tests/kb-quality/queries.jsonl")).unwrap();
    let set: Vec<Labelled> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_kind: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
    let mut misses = Vec::new();
    for q in &set {
        let got = top(&kb, &q.query, 3).await;
        let at1 = got.first().is_some_and(|g| q.expected.contains(g));
        let at3 = got.iter().any(|g| q.expected.contains(g));
        for key in [q.kind.clone(), "all".to_string()] {
            let e = by_kind.entry(key).or_default();
            e.0 += 1;
            e.1 += at1 as usize;
            e.2 += at3 as usize;
        }
        if !at1 {
            misses.push(format!("  {:?} -> {got:?}, want {:?}", q.query, q.expected));
        }
    }
    eprintln!("recall on {} labelled queries:", set.len());
    for (kind, (n, r1, r3)) in &by_kind {
        eprintln!(
            "  {kind:<6} n={n:<3} recall@1 {:.3}  recall@3 {:.3}",
            *r1 as f64 / *n as f64,
            *r3 as f64 / *n as f64
        );
    }
    eprintln!("not first:\n{}", misses.join("\n"));
    let (n, r1, r3) = by_kind["all"];
    let (r1, r3) = (r1 as f64 / n as f64, r3 as f64 / n as f64);
    assert!(
        r1 >= FLOOR_RECALL_AT_1,
        "recall@1 {r1:.3} fell below {FLOOR_RECALL_AT_1}"
    );
    assert!(
        r3 >= FLOOR_RECALL_AT_3,
        "recall@3 {r3:.3} fell below {FLOOR_RECALL_AT_3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_knowledge_base_imports_from_markdown() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kb = open_embedded(dir.path()).await;
    let articles = read_all(&root().join("kb"));
    assert!(articles.len() >= 10, "{} sample articles", articles.len());
    assert!(articles.iter().any(|a| a.language == "en"));
    kb.import(&articles, |_| {}).await.unwrap();
    assert_eq!(
        top(&kb, "the strike clicks but the door stays locked", 1).await,
        ["sample-007"]
    );
    assert_eq!(
        top(&kb, "l'onduleur bipe, il est sur batterie", 1).await,
        ["sample-009"]
    );
    // Cross-language: a French query finds the English article.
    // (Cross-language is the weak side: see README, Knowledge.)
    assert_eq!(
        top(&kb, "l'enregistreur ne trouve pas la nouvelle caméra IP", 1).await,
        ["sample-008"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_built_by_another_embedder_is_refused() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = open_embedded(dir.path()).await;
    first.stats().await.unwrap();
    drop(first);
    let (url, _server) = stub::start(8).await;
    let mut config = embedded_config(dir.path());
    config.embedder = EmbedderConfig::Openai {
        url,
        model: "tiny".into(),
        dimensions: 8,
        api_key_env: "CALLPIPE_TEST_NO_SUCH_KEY".into(),
        query_prefix: String::new(),
        passage_prefix: String::new(),
        timeout_ms: 2_000,
        retries: 0,
    };
    let kb = config.open(&data_dir(), &root()).await.unwrap();
    let err = match kb.stats().await {
        Ok(_) => panic!("a 8-dim embedder opened a 384-dim store"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--recreate"), "{err}");
}

/// The OpenAI-compatible embedder against a test-only local endpoint that
/// checks the request; the store is the real embedded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embedder_round_trip() {
    let (url, server) = stub::start(16).await;
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: no other thread reads this variable.
    unsafe { std::env::set_var("CALLPIPE_TEST_EMBED_KEY", "sk-test") };
    let config = KnowledgeConfig {
        path: Some(dir.path().join("store")),
        embedder: EmbedderConfig::Openai {
            url,
            model: "text-embedding-test".into(),
            dimensions: 16,
            api_key_env: "CALLPIPE_TEST_EMBED_KEY".into(),
            query_prefix: "query: ".into(),
            passage_prefix: "passage: ".into(),
            timeout_ms: 2_000,
            retries: 2,
        },
        ..KnowledgeConfig::default()
    };
    assert_eq!(config.backend, Backend::Embedded);
    let kb = config.open(&data_dir(), &root()).await.unwrap();
    let articles = read_all(&root().join("kb"));
    kb.import(&articles, |_| {}).await.unwrap();
    let hits = top(&kb, "Badge refusé au lecteur alors qu'il est autorisé", 1).await;
    assert_eq!(hits, ["sample-004"]);
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|r| r.auth == "Bearer sk-test" && r.model == "text-embedding-test")
    );
    assert!(
        seen.iter()
            .any(|r| r.inputs.iter().all(|i| i.starts_with("passage: ")))
    );
    assert!(
        seen.iter()
            .any(|r| r.inputs.iter().all(|i| i.starts_with("query: ")))
    );
    // A 503 is retried; the stub fails the first try of every request.
    assert!(server.failures() > 0);
}

/// Against a real Qdrant server: no package of one exists on these
/// machines, so the test is `ignored` (visible as such in every run) and
/// run by hand with `cargo test -p callpipe-knowledge -- --ignored` and
/// `CALLPIPE_TEST_QDRANT_URL=http://HOST:6334` (and `QDRANT_API_KEY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Qdrant server: CALLPIPE_TEST_QDRANT_URL=http://HOST:6334"]
async fn qdrant_server_backend() {
    let url = std::env::var("CALLPIPE_TEST_QDRANT_URL")
        .expect("CALLPIPE_TEST_QDRANT_URL names the Qdrant server to test against");
    if !model_present() {
        return;
    }
    let Some(kb_file) = shared_kb() else { return };
    let config = KnowledgeConfig {
        backend: Backend::Qdrant,
        url: Some(url),
        collection: format!("callpipe-test-{}", std::process::id()),
        ..KnowledgeConfig::default()
    };
    config.destroy(&data_dir()).await.unwrap();
    let kb = config.open(&data_dir(), &root()).await.unwrap();
    let articles = read_all(&kb_file);
    let report = kb.import(&articles, |_| {}).await.unwrap();
    assert_eq!(report.added, 60);
    let again = kb.import(&articles, |_| {}).await.unwrap();
    assert_eq!(again.unchanged, 60);
    let stats = kb.stats().await.unwrap();
    let chunks: usize = articles.iter().map(|a| layout::chunks(a).len()).sum();
    assert_eq!((stats.articles, stats.chunks), (60, chunks));
    assert_eq!(
        top(&kb, "la caméra ne répond plus au ping", 1).await,
        ["kb-001"]
    );
    config.destroy(&data_dir()).await.unwrap();
}

mod faults;

/// A local stand-in for an OpenAI-compatible `/v1/embeddings` endpoint: a
/// deterministic bag-of-words hash embedding, the first try of each request
/// answered 503 to exercise retries.
mod stub {
    use axum::Json;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Debug)]
    pub struct Seen {
        pub auth: String,
        pub model: String,
        pub inputs: Vec<String>,
    }

    #[derive(Clone, Default)]
    pub struct Server {
        seen: Arc<Mutex<Vec<Seen>>>,
        failed: Arc<Mutex<std::collections::HashSet<String>>>,
        dim: usize,
    }

    impl Server {
        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
        pub fn failures(&self) -> usize {
            self.failed.lock().unwrap().len()
        }
    }

    fn embed(text: &str, dim: usize) -> Vec<f32> {
        let mut v = vec![0f32; dim];
        for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
            if word.len() < 4 {
                continue;
            }
            let h = word
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
            v[(h % dim as u64) as usize] += 1.0;
        }
        v
    }

    async fn embeddings(
        State(server): State<Server>,
        headers: HeaderMap,
        Json(body): Json<serde_json::Value>,
    ) -> Result<Json<serde_json::Value>, StatusCode> {
        let inputs: Vec<String> = body["input"]
            .as_array()
            .ok_or(StatusCode::BAD_REQUEST)?
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        let key = inputs.join("\u{1f}");
        if server.failed.lock().unwrap().insert(key) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        server.seen.lock().unwrap().push(Seen {
            auth: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            model: body["model"].as_str().unwrap_or_default().to_string(),
            inputs: inputs.clone(),
        });
        let data: Vec<_> = inputs
            .iter()
            .enumerate()
            .rev() // out of order on purpose: the client sorts by index
            .map(|(i, t)| serde_json::json!({"object": "embedding", "index": i, "embedding": embed(t, server.dim)}))
            .collect();
        Ok(Json(
            serde_json::json!({"object": "list", "data": data, "model": body["model"]}),
        ))
    }

    pub async fn start(dim: usize) -> (String, Server) {
        let server = Server {
            dim,
            ..Server::default()
        };
        let app = axum::Router::new()
            .route("/v1/embeddings", axum::routing::post(embeddings))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (format!("http://{addr}/v1"), server)
    }
}
