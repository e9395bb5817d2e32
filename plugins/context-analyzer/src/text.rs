//! Text normalisation shared by the lexicon and the rules: lower case,
//! accents folded, punctuation to spaces, so "Caméra," and "camera" match.

/// Lower case without accents; apostrophes and punctuation become spaces.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let folded = match c {
            'à' | 'á' | 'â' | 'ä' | 'ã' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'ö' | 'õ' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ÿ' => 'y',
            'œ' => {
                out.push_str("oe");
                continue;
            }
            c if c.is_alphanumeric() => c,
            _ => ' ',
        };
        out.push(folded);
    }
    out
}

/// Words of normalised text.
pub fn words(normalized: &str) -> Vec<&str> {
    normalized.split_whitespace().collect()
}

/// Where `phrase` first occurs in `words`, as a whole-word run.
pub fn first_position(words: &[&str], phrase: &[&str]) -> Option<usize> {
    if phrase.is_empty() {
        return None;
    }
    words.windows(phrase.len()).position(|w| w == phrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_accents_and_punctuation() {
        assert_eq!(
            normalize("Caméra, l'NVR: ÉTEINT!"),
            "camera  l nvr  eteint "
        );
        assert_eq!(
            words(&normalize("  Œil  de-bœuf ")),
            ["oeil", "de", "boeuf"]
        );
        let w = words("le haine ve erre bipe");
        assert_eq!(first_position(&w, &["haine", "ve", "erre"]), Some(1));
        assert_eq!(first_position(&w, &["ve", "haine"]), None);
    }
}
