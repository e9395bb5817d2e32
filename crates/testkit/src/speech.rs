//! Real French phone speech with its transcripts (Debian's
//! asterisk-core-sounds-fr-wav and asterisk-core-sounds-fr), and the word
//! error rate it is scored by.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

/// The prompts' transcripts, as the package ships them.
pub const TRANSCRIPTS: &str = "/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz";

/// Prompt name -> what it says.
pub fn transcripts() -> HashMap<String, String> {
    let mut text = String::new();
    let file = std::fs::File::open(TRANSCRIPTS)
        .unwrap_or_else(|e| panic!("{TRANSCRIPTS}: {e} (install asterisk-core-sounds-fr)"));
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{TRANSCRIPTS}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The 40 prompts benchmarks measure Whisper on (`bench/prompts-fr.txt`:
/// the rule that chose them is written at its top).
pub fn bench_prompts() -> Vec<String> {
    let path = crate::root().join("bench").join("prompts-fr.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A prompt's WAV file.
pub fn prompt_wav(name: &str) -> PathBuf {
    PathBuf::from(crate::SOUNDS).join(format!("{name}.wav"))
}

/// Lower case, no punctuation: what a word error rate compares.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\'', '’'], " ")
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Word-level Levenshtein distance: substitutions, insertions, deletions.
pub fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Word errors of `hypothesis` against `reference`, and the reference's words.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = words(reference);
    (edit_distance(&r, &words(hypothesis)), r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_error_arithmetic() {
        assert_eq!(
            word_errors("Le code est invalide.", "le code invalide"),
            (1, 4)
        );
        assert_eq!(word_errors("l'appel", "l appel"), (0, 2));
        assert_eq!(word_errors("a b", "a b c d"), (2, 2));
    }
}
