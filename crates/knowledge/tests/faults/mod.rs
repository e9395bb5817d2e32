//! The knowledge store through faults: an import a Qdrant server fails
//! half-way (a refused write, a client gone between two requests) keeps
//! every article whole, old or new, and the next import repairs what the
//! cut left.

mod qdrant;

use callpipe_knowledge::article::Article;
use callpipe_knowledge::embedder::EmbedderConfig;
use callpipe_knowledge::{Backend, KnowledgeConfig, layout};
use callpipe_testkit::{data_dir, root};
use serde_json::Value;

const COLLECTION: &str = "faults";

fn article(id: &str, title: &str, symptoms: &[&str], body: &str) -> Article {
    Article {
        id: id.into(),
        title: title.into(),
        language: "fr".into(),
        equipment: vec!["nvr".into()],
        symptoms: symptoms.iter().map(|s| s.to_string()).collect(),
        body: body.into(),
    }
}

/// Chunk payloads of one article in the stand-in, as (chunk, hash).
fn chunks(stand: &qdrant::StandIn, id: &str) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = stand
        .points(COLLECTION)
        .into_iter()
        .filter(|p| p["article_id"] == id)
        .map(|p| {
            (
                p["chunk"].as_i64().expect("a chunk number"),
                p["content_hash"].as_str().expect("a hash").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Whole: chunks 0..n, all of one version.
fn whole(got: &[(i64, String)], article: &Article) -> bool {
    let n = layout::chunks(article).len();
    got.len() == n
        && got.iter().enumerate().all(|(i, (c, _))| *c == i as i64)
        && got.iter().all(|(_, h)| *h == got[0].1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_the_server_cuts_short_keeps_every_article_whole() {
    let (embedder, _embeddings) = crate::stub::start(16).await;
    let (url, stand) = qdrant::StandIn::start().await;
    // SAFETY: tests that read this variable set the same value.
    unsafe { std::env::set_var("CALLPIPE_TEST_EMBED_KEY", "sk-test") };
    let config = KnowledgeConfig {
        backend: Backend::Qdrant,
        url: Some(url),
        collection: COLLECTION.into(),
        embedder: EmbedderConfig::Openai {
            url: embedder,
            model: "text-embedding-test".into(),
            dimensions: 16,
            api_key_env: "CALLPIPE_TEST_EMBED_KEY".into(),
            query_prefix: String::new(),
            passage_prefix: String::new(),
            timeout_ms: 2_000,
            retries: 2,
        },
        ..KnowledgeConfig::default()
    };
    let kb = config
        .open(&data_dir(), &root())
        .await
        .expect("opens on the stand-in");
    let camera = article(
        "kb-cam",
        "Caméra hors ligne",
        &["la caméra ne répond plus", "pas d'image sur le moniteur"],
        "1. Vérifier l'alimentation PoE.",
    );
    let badge = article(
        "kb-badge",
        "Badge refusé",
        &[
            "le lecteur refuse le badge",
            "voyant rouge au lecteur",
            "bip long",
        ],
        "1. Vérifier les droits du badge.",
    );
    let report = kb
        .import(&[camera.clone(), badge.clone()], |_| {})
        .await
        .expect("import");
    assert_eq!(report.added, 2);
    let old = chunks(&stand, "kb-badge");
    assert!(whole(&old, &badge), "{old:?}");

    // A shorter new version; the server refuses the write of its chunks:
    // the old version stays, whole.
    let shorter = article(
        "kb-badge",
        "Badge refusé",
        &["le lecteur refuse le badge"],
        "1. Réenrôler le badge.",
    );
    // The write and the client's own retry of it.
    stand.fail("upsert", 2);
    let err = kb.import(&[camera.clone(), shorter.clone()], |_| {}).await;
    assert!(err.is_err(), "the refused write is reported");
    assert_eq!(stand.failures_left(), 0, "the client tries a write twice");
    assert_eq!(
        chunks(&stand, "kb-badge"),
        old,
        "the old version, untouched"
    );

    // The write goes through, the removal of the old version's rest does
    // not (the client gone between the two): the new version is whole and
    // found; what is left of the old one sits past its last chunk.
    stand.fail("delete", 2);
    let err = kb.import(&[camera.clone(), shorter.clone()], |_| {}).await;
    assert!(err.is_err(), "the failed removal is reported");
    assert_eq!(stand.failures_left(), 0);
    let cut = chunks(&stand, "kb-badge");
    let n = layout::chunks(&shorter).len();
    assert!(
        whole(&cut[..n], &shorter) && cut[0].1 != old[0].1,
        "{cut:?}"
    );
    assert!(
        cut.len() > n,
        "the old version's rest is still there: {cut:?}"
    );
    assert!(whole(&chunks(&stand, "kb-cam"), &camera));

    // The next import of the same articles sees the leftover and finishes
    // the replacement; then nothing is left to do.
    let report = kb
        .import(&[camera.clone(), shorter.clone()], |_| {})
        .await
        .expect("import");
    assert_eq!((report.updated, report.unchanged), (1, 1), "{report:?}");
    let repaired = chunks(&stand, "kb-badge");
    assert!(whole(&repaired, &shorter), "{repaired:?}");
    let expected = layout::chunks(&camera).len() + layout::chunks(&shorter).len();
    let report = kb.import(&[camera, shorter], |_| {}).await.expect("import");
    assert_eq!(report.unchanged, 2, "{report:?}");
    let stored: Vec<Value> = stand
        .points(COLLECTION)
        .into_iter()
        .map(|p| p["article_id"].clone())
        .collect();
    assert_eq!(
        stored.len(),
        expected,
        "two articles, nothing else: {stored:?}"
    );
}
