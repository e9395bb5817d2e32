//! The collection layout both backends share: vector names, payload fields,
//! point ids, and the hybrid query as data. Each backend only translates
//! these into its own API.

use super::article::Article;
use sha2::{Digest, Sha256};

/// Dense vector (the embedder's), cosine distance.
pub const DENSE: &str = "dense";
/// Sparse lexical vector (BM25 term weights; the store applies IDF).
pub const SPARSE: &str = "sparse";

pub mod field {
    pub const ARTICLE_ID: &str = "article_id";
    pub const CHUNK: &str = "chunk";
    pub const TITLE: &str = "title";
    pub const LANGUAGE: &str = "language";
    pub const EQUIPMENT: &str = "equipment";
    pub const SYMPTOMS: &str = "symptoms";
    pub const BODY: &str = "body";
    pub const TEXT: &str = "text";
    /// What the article's chunks were built from; unchanged means skip.
    pub const CONTENT_HASH: &str = "content_hash";
}

/// Payload fields with a keyword index (filters and deletes use them).
pub const KEYWORD_FIELDS: &[&str] = &[field::ARTICLE_ID, field::EQUIPMENT, field::LANGUAGE];

/// One point: a piece of an article with both vectors.
#[derive(Debug, Clone)]
pub struct ChunkPoint {
    pub id: uuid::Uuid,
    pub dense: Vec<f32>,
    pub sparse: Sparse,
    pub payload: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sparse {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// Which chunks a search may return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// Only chunks tagged with one of these (empty: all).
    pub equipment: Vec<String>,
    /// Never these articles (the store's own calibration asks as if the
    /// store did not hold the article a question came from).
    pub exclude_articles: Vec<String>,
    /// Never these chunks, by (article id, chunk number): a question taken
    /// from a chunk must not find itself word for word.
    pub exclude_chunks: Vec<(String, usize)>,
}

/// Dense and lexical candidates, fused by reciprocal rank.
#[derive(Debug, Clone)]
pub struct HybridQuery {
    pub dense: Vec<f32>,
    pub sparse: Sparse,
    pub scope: Scope,
    /// Candidates each side passes to the fusion.
    pub prefetch: usize,
    /// Chunks returned.
    pub limit: usize,
    /// RRF weights of the dense and the lexical side.
    pub weights: [f32; 2],
}

#[derive(Debug, Clone)]
pub struct ScoredChunk {
    pub score: f32,
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// Its dense vector, when the search asked for it (`nearest` does,
    /// for the centred cosine); empty otherwise.
    pub dense: Vec<f32>,
}

/// Adds `v` to a running sum, sized on the first vector; `false` (and
/// nothing added) for a vector of another size.
pub fn add_to(sum: &mut Vec<f64>, v: &[f32]) -> bool {
    if sum.is_empty() {
        sum.resize(v.len(), 0.0);
    }
    if sum.len() != v.len() {
        return false;
    }
    for (s, x) in sum.iter_mut().zip(v) {
        *s += *x as f64;
    }
    true
}

/// What the store holds of an article, as an import needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The content hash its first chunk carries.
    pub hash: String,
    /// A chunk past the article's last (at index `chunks`) is there: what a
    /// longer earlier version left when its removal was cut short.
    pub leftover: bool,
}

/// A stored article's state from the points read at its chunk 0 and at
/// index `chunks` (either may be absent).
pub fn stored(first: Option<&serde_json::Value>, past_last: bool) -> Option<Stored> {
    let hash = first?.as_str()?.to_string();
    Some(Stored {
        hash,
        leftover: past_last,
    })
}

/// Stable id for chunk `n` of an article: re-importing overwrites it.
pub fn point_id(article_id: &str, chunk: usize) -> uuid::Uuid {
    let digest = Sha256::digest(format!("{article_id}\u{1f}{chunk}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Hash of everything a chunk is built from, the embedder included.
pub fn content_hash(article: &Article, embedder: &str) -> String {
    let json = serde_json::to_string(article).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(json.as_bytes());
    h.update([0x1f]);
    h.update(embedder.as_bytes());
    h.update([0x1f]);
    h.update(CHUNKING_VERSION.to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Bump when `chunks` changes, so a re-import rebuilds every article.
const CHUNKING_VERSION: u32 = 2;

/// The texts an article is indexed as: its title, each symptom on its own
/// (short phrases like a caller's, so one close phrase is enough to match),
/// then the fix. An article scores by its best chunk. The embedder windows
/// any text over its 512-token limit.
pub fn chunks(article: &Article) -> Vec<String> {
    let mut out = Vec::with_capacity(article.symptoms.len() + 2);
    out.push(article.title.clone());
    out.extend(article.symptoms.iter().cloned());
    out.push(format!("{}\n{}", article.title, article.body));
    out
}

/// How many chunks `chunks` makes per article (for sizing searches).
pub const fn chunks_per_article_hint() -> usize {
    8
}

/// The payload of chunk `n`.
pub fn payload(
    article: &Article,
    n: usize,
    text: &str,
    hash: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(map) = serde_json::json!({
        field::ARTICLE_ID: article.id,
        field::CHUNK: n,
        field::TITLE: article.title,
        field::LANGUAGE: article.language,
        field::EQUIPMENT: article.equipment,
        field::SYMPTOMS: article.symptoms,
        field::BODY: article.body,
        field::TEXT: text,
        field::CONTENT_HASH: hash,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> Article {
        Article {
            id: "kb-1".into(),
            title: "Caméra hors ligne".into(),
            language: "fr".into(),
            equipment: vec!["camera".into()],
            symptoms: vec!["plus d'image".into()],
            body: "1. Vérifier le PoE.".into(),
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(point_id("kb-1", 0), point_id("kb-1", 0));
        assert_ne!(point_id("kb-1", 0), point_id("kb-1", 1));
        assert_ne!(point_id("kb-1", 0), point_id("kb-10", 0));
    }

    #[test]
    fn hash_follows_content_and_embedder() {
        let a = article();
        let mut b = article();
        b.body.push('!');
        assert_eq!(content_hash(&a, "e5"), content_hash(&a, "e5"));
        assert_ne!(content_hash(&a, "e5"), content_hash(&b, "e5"));
        assert_ne!(content_hash(&a, "e5"), content_hash(&a, "openai"));
    }

    #[test]
    fn chunks_cover_symptoms_and_fix() {
        let c = chunks(&article());
        assert_eq!(c[..2], ["Caméra hors ligne", "plus d'image"]);
        assert!(c[2].ends_with("Vérifier le PoE."));
    }
}
