//! `POST /api/kb/import`: articles into the running pipeline's knowledge
//! base while the server serves, with the parsing and errors of
//! `callpipe kb import` (so ops never stop the server to update articles;
//! the embedded store cannot be opened by a second process meanwhile).
//!
//! The body is JSON Lines (`application/x-ndjson`, one article per line, as
//! `articles.jsonl`), one Markdown article (`text/markdown`), or a JSON
//! array of articles (`application/json`). Every article is read and
//! checked before any is written; an error names the line.

use super::{ApiError, AppState};
use crate::knowledge::article::{self, Article};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Deserialize, Default)]
pub struct ImportQuery {
    /// The name errors give the body (a file name, say); default `request`.
    name: Option<String>,
}

/// Largest body taken (the shipped 60-article base is ~150 KB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub async fn import(
    State(state): State<AppState>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(kb) = state
        .pipeline()
        .capabilities
        .get::<crate::knowledge::KnowledgeBase>()
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the running pipeline has no knowledge base ([capabilities.knowledge])",
        ));
    };
    let name = q.name.unwrap_or_else(|| "request".into());
    let articles = parse(&headers, &body, Path::new(&name))
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    if articles.is_empty() {
        return Err(ApiError::bad_request("no article in the body"));
    }
    let report = kb.import(&articles, |_| {}).await.map_err(|e| {
        tracing::error!("knowledge import failed: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("import failed: {e}"),
        )
    })?;
    tracing::info!(
        added = report.added,
        updated = report.updated,
        unchanged = report.unchanged,
        "knowledge base: articles imported through the API"
    );
    Ok(Json(json!({
        "status": "imported",
        "articles": articles.len(),
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        // Refitted on the whole store when anything changed.
        "calibration": report.calibration,
    })))
}

/// The articles in the body, by its content type; every one checked, ids
/// unique. Errors read like `kb import`'s: `NAME:LINE: what is wrong`.
fn parse(headers: &HeaderMap, body: &[u8], name: &Path) -> Result<Vec<Article>, String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("{}: not UTF-8: {e}", name.display()))?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let articles = match kind.as_str() {
        "application/x-ndjson" | "application/jsonl" => {
            article::parse_jsonl(name, text).map_err(|e| e.to_string())?
        }
        "text/markdown" => vec![article::parse_markdown(name, text).map_err(|e| e.to_string())?],
        "application/json" => {
            let items: Vec<Value> = serde_json::from_str(text)
                .map_err(|e| format!("{}: not a JSON array of articles: {e}", name.display()))?;
            // One line per article, so errors name the article's place.
            let lines: Vec<String> = items.iter().map(Value::to_string).collect();
            article::parse_jsonl(name, &lines.join("\n")).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "send articles as application/x-ndjson (JSON Lines), text/markdown or a JSON \
                 array, not `{other}`"
            ));
        }
    };
    let mut seen = std::collections::HashMap::new();
    for a in &articles {
        if let Some(first) = seen.insert(a.id.as_str(), a.title.as_str()) {
            return Err(format!(
                "article id `{}` appears twice (\"{first}\" and \"{}\")",
                a.id, a.title
            ));
        }
    }
    Ok(articles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, kind.parse().unwrap());
        h
    }

    const A: &str =
        r#"{"id":"a-1","title":"Caméra hors ligne","language":"fr","body":"1. Vérifier le PoE."}"#;

    #[test]
    fn bodies_are_read_like_files_and_errors_name_the_line() {
        let name = Path::new("update.jsonl");
        let two = format!("{A}\n{}", A.replace("a-1", "a-2"));
        assert_eq!(
            parse(&typed("application/x-ndjson"), two.as_bytes(), name)
                .unwrap()
                .len(),
            2
        );
        let array = format!("[{A}]");
        assert_eq!(
            parse(&typed("application/json"), array.as_bytes(), name)
                .unwrap()
                .len(),
            1
        );
        let bad = format!("{A}\n{{\"id\":\"x\"}}");
        let e = parse(&typed("application/x-ndjson"), bad.as_bytes(), name).unwrap_err();
        assert!(e.starts_with("update.jsonl:2:"), "{e}");
        let dup = format!("{A}\n{A}");
        let e = parse(&typed("application/x-ndjson"), dup.as_bytes(), name).unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        let e = parse(&typed("text/plain"), A.as_bytes(), name).unwrap_err();
        assert!(e.contains("application/x-ndjson"), "{e}");
    }
}
