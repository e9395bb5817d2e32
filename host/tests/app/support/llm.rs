//! A local stand-in for an OpenAI-compatible `/v1/chat/completions`
//! endpoint (hosted models cannot be reached from here). It tells the
//! stages' requests apart by their instructions: a question to word gets
//! `QUESTION`, a search query to rewrite gets `QUERY`, an answer to write
//! from articles gets numbered steps citing the first article it was given
//! (or citing nothing, as the test asks), a summary (structured output)
//! gets `SUMMARY_PROBLEM`, a line to translate `TRANSLATION`; slowly or not at all as the test asks. It keeps
//! every request it got.

use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The question the stand-in words.
pub const QUESTION: &str =
    "D'après ce que vous décrivez, quel équipement du site pose problème exactement ?";
/// The search query it rewrites every conversation into.
pub const QUERY: &str =
    "caméra parking éteinte après remplacement du switch PoE, ne répond plus au ping";
/// Its translation of any line it is asked to translate.
pub const TRANSLATION: &str =
    "Bonjour, je suis chez un client et la caméra du parking ne s'allume plus.";
/// The problem its summaries state.
pub const SUMMARY_PROBLEM: &str = "Caméra du parking éteinte après le remplacement du switch PoE";

#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Answers at once.
    Good,
    /// Answers after this long.
    Slow(Duration),
    /// Answers 500 to everything.
    Failing,
    /// Answers at once, but its answers from articles cite none of them.
    CitesNothing,
    /// Does what the caller's words tell it: its question reads back what
    /// the technician said (an injected instruction, a number).
    EchoesCaller,
}

pub struct ModelStandIn {
    /// Base URL, up to `/v1`.
    pub url: String,
    /// The JSON bodies it was sent.
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl ModelStandIn {
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("requests").clone()
    }
}

pub async fn model_stand_in(behaviour: Behaviour) -> ModelStandIn {
    let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = requests.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let structured = body.get("response_format").is_some();
                let system = body["messages"][0]["content"].as_str().unwrap_or("").to_string();
                let user = body["messages"][1]["content"].as_str().unwrap_or("").to_string();
                seen.lock().expect("requests").push(body);
                match behaviour {
                    Behaviour::Failing => {
                        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
                    }
                    Behaviour::Slow(d) => tokio::time::sleep(d).await,
                    Behaviour::Good | Behaviour::CitesNothing | Behaviour::EchoesCaller => {}
                }
                let first_article = user
                    .strip_prefix('[')
                    .and_then(|rest| rest.split(']').next())
                    .unwrap_or("")
                    .to_string();
                let content = if system.contains("search query") {
                    QUERY.to_string()
                } else if system.contains("You translate") {
                    TRANSLATION.to_string()
                } else if system.contains("[sample-001]") {
                    match behaviour {
                        Behaviour::CitesNothing => {
                            "1. Vérifiez l'alimentation PoE du port.\n2. Redémarrez la caméra.".to_string()
                        }
                        _ => format!(
                            "1. Vérifiez l'alimentation PoE du port [{first_article}].\n2. Redémarrez la caméra."
                        ),
                    }
                } else if structured {
                    json!({
                        "problem": SUMMARY_PROBLEM,
                        "equipment": ["caméra", "switch PoE"],
                        "steps_tried": ["ping de la caméra"],
                        "outcome": "Article sample-001 proposé",
                    })
                    .to_string()
                } else if matches!(behaviour, Behaviour::EchoesCaller) {
                    // The clarifier quotes the technician « like this ».
                    let said = user
                        .split('«')
                        .nth(1)
                        .and_then(|rest| rest.split('»').next())
                        .unwrap_or("")
                        .trim()
                        .trim_end_matches('.');
                    format!("{said} ?")
                } else {
                    QUESTION.to_string()
                };
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 120, "completion_tokens": 20},
                    })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    ModelStandIn {
        url: format!("http://{addr}/v1"),
        requests,
    }
}

/// The language-model pipeline with its model at `url`.
pub fn llm_pipeline(tag: &str, url: &str) -> std::path::PathBuf {
    llm_pipeline_floor(tag, url, None)
}

/// The same, with the solutions stage's floor set (`super::solutions_floor`).
pub fn llm_pipeline_floor(tag: &str, url: &str, floor: Option<f64>) -> std::path::PathBuf {
    let url = url.to_string();
    super::pipeline_with("technician-support-llm.toml", tag, move |t| {
        t["capabilities"]["llm"]
            .as_table_mut()
            .expect("[capabilities.llm]")
            .insert("url".into(), toml::Value::String(url));
        if let Some(floor) = floor {
            super::solutions_floor(t, floor);
        }
    })
}
