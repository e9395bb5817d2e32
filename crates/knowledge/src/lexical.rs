//! The lexical side of hybrid search: BM25 term weights from Qdrant's own
//! tokenizer pipeline (qdrant-edge's BM25, the same hashing as Qdrant
//! server's BM25 inference); the store applies IDF at query time.
//!
//! One analyser serves French and English: French stemming, both stopword
//! lists, accents folded. Cross-language pairs are the dense side's job.

use super::layout::Sparse;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

pub struct Lexical {
    bm25: EdgeBm25,
}

impl Default for Lexical {
    fn default() -> Self {
        Self::new()
    }
}

impl Lexical {
    pub fn new() -> Self {
        let config: EdgeBm25Config = serde_json::from_value(serde_json::json!({
            "language": "french",
            "ascii_folding": true,
            "stopwords": { "languages": ["english", "french"] },
        }))
        .unwrap_or_default();
        let bm25 = EdgeBm25::new(config)
            .or_else(|_| EdgeBm25::new(EdgeBm25Config::default()))
            .unwrap_or_else(|e| panic!("qdrant-edge's default BM25 config is invalid: {e}"));
        Lexical { bm25 }
    }

    pub fn document(&self, text: &str) -> Sparse {
        let v = self.bm25.embed_document(text);
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }

    pub fn query(&self, text: &str) -> Sparse {
        let v = self.bm25.embed_query(text);
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_and_stems_french() {
        let l = Lexical::new();
        let a = l.query("caméras enregistrement");
        let b = l.query("camera enregistrements");
        assert_eq!(a.indices, b.indices);
        assert!(l.query("le la les the of").indices.is_empty());
    }
}
