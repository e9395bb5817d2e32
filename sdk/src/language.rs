//! Language tags as stages meet them (`fr`, `pt-BR`, `zh_CN`): a stage
//! words its own sentences by the primary subtag, and names a language in
//! English when it asks a model to write in it.

/// `pt-BR` -> `pt` (lowercase; empty stays empty).
pub fn primary(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase()
}

/// The English name of a language a model is asked to write in, for the
/// languages callpipe's stages ask and detect (README, "Languages").
pub fn english_name(tag: &str) -> Option<&'static str> {
    Some(match primary(tag).as_str() {
        "ar" => "Arabic",
        "de" => "German",
        "en" => "English",
        "es" => "Spanish",
        "fr" => "French",
        "it" => "Italian",
        "ja" => "Japanese",
        "nl" => "Dutch",
        "pl" => "Polish",
        "pt" => "Portuguese",
        "ro" => "Romanian",
        "ru" => "Russian",
        "tr" => "Turkish",
        "vi" => "Vietnamese",
        "zh" => "Chinese",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_reduce_to_their_primary_subtag_and_fifteen_have_names() {
        assert_eq!(primary("pt-BR"), "pt");
        assert_eq!(primary("ZH_cn"), "zh");
        assert_eq!(primary(""), "");
        assert_eq!(english_name("es-MX"), Some("Spanish"));
        assert_eq!(english_name("xx"), None);
        let named = [
            "ar", "de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ro", "ru", "tr", "vi",
            "zh",
        ];
        assert!(named.iter().all(|t| english_name(t).is_some()));
    }
}
