//! TwiML documents for voice calls.

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// How the call's audio reaches callpipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// `<Connect><Stream>`: bidirectional, the caller's track only; callpipe
    /// can speak back.
    Connect,
    /// `<Start><Stream track="both_tracks">`: listen to both sides (inbound is
    /// the technician, outbound the support agent).
    Start,
}

/// Twilio's `<Say>` language for a BCP 47 tag.
pub fn say_language(language: &str) -> &'static str {
    match language.split(['-', '_']).next().unwrap_or("") {
        "fr" => "fr-FR",
        "de" => "de-DE",
        "es" => "es-ES",
        "it" => "it-IT",
        "nl" => "nl-NL",
        "pt" => "pt-PT",
        _ => "en-US",
    }
}

/// Tells the caller every line is taken and hangs up (the server is at
/// capacity).
pub fn busy(language: &str) -> String {
    let text = match language.split(['-', '_']).next().unwrap_or("") {
        "fr" => "Toutes nos lignes sont occupées. Merci de rappeler dans quelques minutes.",
        _ => "All our lines are busy. Please call again in a few minutes.",
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say language=\"{}\">{}</Say><Hangup/></Response>",
        say_language(language),
        escape(text)
    )
}

/// Says `greeting` in `language`, then streams the call to `stream_url`
/// with `parameters` as `<Parameter>`s (they arrive in the `start`
/// message's customParameters).
pub fn stream_call(
    mode: StreamMode,
    stream_url: &str,
    language: &str,
    greeting: &str,
    parameters: &[(&str, &str)],
) -> String {
    let params: String = parameters
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            format!(
                "<Parameter name=\"{}\" value=\"{}\"/>",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let say = format!(
        "<Say language=\"{}\">{}</Say>",
        say_language(language),
        escape(greeting)
    );
    let url = escape(stream_url);
    match mode {
        StreamMode::Connect => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{say}<Connect><Stream url=\"{url}\">{params}</Stream></Connect></Response>"
        ),
        StreamMode::Start => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{say}<Start><Stream url=\"{url}\" track=\"both_tracks\">{params}</Stream></Start><Pause length=\"3600\"/></Response>"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_stream_carries_parameters_escaped() {
        let x = stream_call(
            StreamMode::Connect,
            "wss://h.example/twilio/media-stream",
            "fr",
            "Bonjour, vous êtes en ligne avec le support technique.",
            &[
                ("session_id", "s1"),
                ("technician_name", "Zoé & \"Co\""),
                ("empty", ""),
            ],
        );
        assert!(x.contains("<Say language=\"fr-FR\">Bonjour"), "{x}");
        assert!(
            x.contains("<Connect><Stream url=\"wss://h.example/twilio/media-stream\">"),
            "{x}"
        );
        assert!(
            x.contains("<Parameter name=\"technician_name\" value=\"Zoé &amp; &quot;Co&quot;\"/>"),
            "{x}"
        );
        assert!(!x.contains("empty"));
    }

    #[test]
    fn start_stream_listens_to_both_tracks() {
        let x = stream_call(StreamMode::Start, "wss://h/s", "en", "Hello", &[]);
        assert!(
            x.contains("<Start><Stream url=\"wss://h/s\" track=\"both_tracks\">"),
            "{x}"
        );
        assert!(x.contains("<Say language=\"en-US\">"), "{x}");
    }
}
