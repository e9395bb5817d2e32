//! Knowledge-base articles and the two file formats `kb import` reads:
//! JSON Lines (the shipped `articles.jsonl` layout) and Markdown.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Article {
    pub id: String,
    pub title: String,
    /// `fr`, `en`, ...
    pub language: String,
    #[serde(default)]
    pub equipment: Vec<String>,
    /// Short phrases a technician would say.
    #[serde(default)]
    pub symptoms: Vec<String>,
    /// The fix, as numbered steps.
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArticleError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("article id `{id}` appears twice (\"{first}\" and \"{second}\")")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
}

/// Every article under `paths` (files or directories of them), all read
/// and checked before any is used, so a bad line stops an import before
/// anything is written. Returns the articles and how many files held them.
pub fn read_all(paths: &[PathBuf]) -> Result<(Vec<Article>, usize), ArticleError> {
    let mut articles = Vec::new();
    let mut files = 0;
    for path in paths {
        for file in collect(path)? {
            articles.extend(read_file(&file)?);
            files += 1;
        }
    }
    let mut seen = std::collections::HashMap::new();
    for a in &articles {
        if let Some(first) = seen.insert(a.id.as_str(), a.title.as_str()) {
            return Err(ArticleError::Duplicate {
                id: a.id.clone(),
                first: first.to_string(),
                second: a.title.clone(),
            });
        }
    }
    Ok((articles, files))
}

impl Article {
    fn check(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("`id` is empty".into());
        }
        if self.title.trim().is_empty() {
            return Err("`title` is empty".into());
        }
        if self.body.trim().is_empty() {
            return Err("`body` is empty".into());
        }
        if self.language.trim().is_empty() {
            return Err("`language` is empty".into());
        }
        Ok(())
    }
}

/// Every article in a `.jsonl` or `.md` file; errors name the file and line.
pub fn read_file(path: &Path) -> Result<Vec<Article>, ArticleError> {
    let text = std::fs::read_to_string(path).map_err(|source| ArticleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "md" | "markdown" => parse_markdown(path, &text).map(|a| vec![a]),
        _ => parse_jsonl(path, &text),
    }
}

/// Files `kb import` takes from a directory (recursively), in a stable order.
pub fn collect(path: &Path) -> Result<Vec<PathBuf>, ArticleError> {
    let io = |source| ArticleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| ArticleError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ArticleError::Io {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jsonl" | "md" | "markdown")
            ) && !is_readme(&p)
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A directory's README describes the knowledge base; it is not an article.
fn is_readme(p: &Path) -> bool {
    p.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.eq_ignore_ascii_case("readme"))
}

pub fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Article>, ArticleError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |message: String| ArticleError::At {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let article: Article = serde_json::from_str(line).map_err(|e| {
            at(format!(
                "not an article: {}",
                strip_position(&e.to_string())
            ))
        })?;
        article.check().map_err(at)?;
        out.push(article);
    }
    Ok(out)
}

fn strip_position(m: &str) -> &str {
    match m.rfind(" at line ") {
        Some(i) => &m[..i],
        None => m,
    }
}

/// Markdown article:
///
/// ```text
/// ---
/// id: kb-100
/// language: fr
/// equipment: camera, nvr
/// ---
/// # Title
///
/// ## Symptoms            (or "Symptômes")
/// - phrase
///
/// ## Fix                 (any other heading, or none)
/// 1. step
/// ```
///
/// The front matter is optional: the id defaults to the file name and the
/// language to `fr`.
pub fn parse_markdown(path: &Path, text: &str) -> Result<Article, ArticleError> {
    let at = |line: usize, message: &str| ArticleError::At {
        path: path.to_path_buf(),
        line,
        message: message.to_string(),
    };
    let mut id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let mut language = "fr".to_string();
    let mut equipment = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    if lines.peek().is_some_and(|(_, l)| l.trim() == "---") {
        lines.next();
        let mut closed = false;
        for (n, line) in lines.by_ref() {
            if line.trim() == "---" {
                closed = true;
                break;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(at(n + 1, "front matter lines are `key: value`"));
            };
            let value = value.trim();
            match key.trim() {
                "id" => id = value.to_string(),
                "language" => language = value.to_string(),
                "equipment" => {
                    equipment = value
                        .trim_matches(['[', ']'])
                        .split(',')
                        .map(|s| s.trim().trim_matches('"').to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                other => {
                    return Err(at(
                        n + 1,
                        &format!("unknown front-matter key `{other}` (id, language, equipment)"),
                    ));
                }
            }
        }
        if !closed {
            return Err(at(1, "the front matter is not closed by `---`"));
        }
    }
    let mut title = None;
    let mut symptoms = Vec::new();
    let mut body = Vec::new();
    let mut in_symptoms = false;
    for (_, line) in lines {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("# ")
            && title.is_none()
        {
            title = Some(h.trim().to_string());
            continue;
        }
        if let Some(h) = t.strip_prefix("## ") {
            let h = h.trim().to_lowercase();
            in_symptoms = h.starts_with("symptom") || h.starts_with("sympt");
            continue;
        }
        if in_symptoms {
            if let Some(item) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
                symptoms.push(item.trim().to_string());
            }
        } else if !t.is_empty() || !body.is_empty() {
            body.push(line.to_string());
        }
    }
    let Some(title) = title else {
        return Err(at(1, "no `# Title` heading"));
    };
    let article = Article {
        id,
        title,
        language,
        equipment,
        symptoms,
        body: body.join("\n").trim().to_string(),
    };
    article.check().map_err(|m| at(1, &m))?;
    Ok(article)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_name_the_line() {
        let text =
            "{\"id\":\"a\",\"title\":\"t\",\"language\":\"fr\",\"body\":\"b\"}\n\n{\"id\":\"b\"";
        let err = parse_jsonl(Path::new("kb.jsonl"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("kb.jsonl:3: not an article"), "{err}");
        let text = "{\"id\":\"a\",\"title\":\"\",\"language\":\"fr\",\"body\":\"b\"}";
        let err = parse_jsonl(Path::new("kb.jsonl"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "kb.jsonl:1: `title` is empty");
        let text = "{\"id\":\"a\",\"title\":\"t\",\"language\":\"fr\",\"body\":\"b\",\"x\":1}";
        let err = parse_jsonl(Path::new("kb.jsonl"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn markdown_with_front_matter() {
        let text = "---\nid: kb-900\nlanguage: en\nequipment: camera, nvr\n---\n# Camera offline\n\n## Symptoms\n- no image\n- no ping\n\n## Fix\n1. Check PoE.\n2. Ping it.\n";
        let a = parse_markdown(Path::new("x.md"), text).unwrap();
        assert_eq!(a.id, "kb-900");
        assert_eq!(a.language, "en");
        assert_eq!(a.equipment, ["camera", "nvr"]);
        assert_eq!(a.symptoms, ["no image", "no ping"]);
        assert_eq!(a.body, "1. Check PoE.\n2. Ping it.");
    }

    #[test]
    fn markdown_defaults_and_errors() {
        let a = parse_markdown(Path::new("dir/porte.md"), "# Porte bloquée\nDébloquer.\n").unwrap();
        assert_eq!((a.id.as_str(), a.language.as_str()), ("porte", "fr"));
        let err = parse_markdown(Path::new("p.md"), "---\ncolour: red\n---\n# T\nb\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "p.md:2: unknown front-matter key `colour` (id, language, equipment)"
        );
        let err = parse_markdown(Path::new("p.md"), "no title\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "p.md:1: no `# Title` heading");
    }
}
