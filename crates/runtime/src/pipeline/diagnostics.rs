//! Errors in a pipeline file, located by file, line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The stage the problem belongs to, when there is one.
    pub stage: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error",
            self.file.display(),
            self.line,
            self.column
        )?;
        if let Some(stage) = &self.stage {
            write!(f, " in stage `{stage}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file; a pipeline with any is never activated.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Turns byte offsets in one source text into diagnostics.
pub struct SourceMap<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl SourceMap<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub fn at(
        &self,
        span: Option<Range<usize>>,
        stage: Option<&str>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = span.map_or((1, 1), |s| self.line_column(s.start));
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            stage: stage.map(str::to_owned),
            message: message.into(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_columns() {
        let map = SourceMap {
            file: Path::new("p.toml"),
            text: "a = 1\n\nbé = 2\n",
        };
        assert_eq!(map.line_column(0), (1, 1));
        assert_eq!(map.line_column(4), (1, 5));
        assert_eq!(map.line_column(7), (3, 1));
        assert_eq!(map.line_column(10), (3, 3)); // after the two-byte é
        let d = map.at(Some(7..8), Some("vad"), "boom");
        assert_eq!(d.to_string(), "p.toml:3:1: error in stage `vad`: boom");
    }
}
