//! Spelled-out acronyms, as speech recognition writes them: "haine vé erre"
//! is how Whisper hears a French technician say "NVR", "pé o eu" is PoE.
//! Queries are folded back to the acronym before they are embedded, so both
//! the dense and the lexical side see the word the articles use.

/// How a spoken token maps to a letter, and how sure we are that it is one.
/// Weak names are also ordinary words ("elle", "a", "are"): they count only
/// inside a run that strong names anchor.
fn letter(token: &str) -> Option<(char, bool)> {
    const STRONG: &[(&str, char)] = &[
        // French letter names, with the spellings Whisper produces.
        ("bé", 'B'),
        ("bê", 'B'),
        ("cé", 'C'),
        ("dé", 'D'),
        ("dè", 'D'),
        ("effe", 'F'),
        ("èf", 'F'),
        ("gé", 'G'),
        ("hache", 'H'),
        ("ache", 'H'),
        ("ji", 'J'),
        ("ka", 'K'),
        ("emme", 'M'),
        ("ème", 'M'),
        ("enne", 'N'),
        ("haine", 'N'),
        ("aine", 'N'),
        ("ène", 'N'),
        ("pé", 'P'),
        ("pê", 'P'),
        ("ku", 'Q'),
        ("erre", 'R'),
        ("ère", 'R'),
        ("hère", 'R'),
        ("esse", 'S'),
        ("èsse", 'S'),
        ("té", 'T'),
        ("vé", 'V'),
        ("vê", 'V'),
        ("ixe", 'X'),
        ("zède", 'Z'),
        ("wé", 'W'),
        // English letter names.
        ("bee", 'B'),
        ("cee", 'C'),
        ("dee", 'D'),
        ("eff", 'F'),
        ("gee", 'G'),
        ("aitch", 'H'),
        ("jay", 'J'),
        ("kay", 'K'),
        ("ell", 'L'),
        ("pee", 'P'),
        ("cue", 'Q'),
        ("ess", 'S'),
        ("tee", 'T'),
        ("vee", 'V'),
        ("zee", 'Z'),
        ("zed", 'Z'),
    ];
    const WEAK: &[(&str, char)] = &[
        ("a", 'A'),
        ("ah", 'A'),
        ("é", 'E'),
        ("eu", 'E'),
        ("e", 'E'),
        ("i", 'I'),
        ("o", 'O'),
        ("oh", 'O'),
        ("eau", 'O'),
        ("u", 'U'),
        ("elle", 'L'),
        ("el", 'L'),
        ("em", 'M'),
        ("en", 'N'),
        ("air", 'R'),
        ("are", 'R'),
        ("ar", 'R'),
        ("thé", 'T'),
        ("ex", 'X'),
        ("eye", 'I'),
        ("ay", 'A'),
        ("ee", 'E'),
        ("you", 'U'),
        ("ca", 'K'),
    ];
    let lower = token.to_lowercase();
    if let Some(&(_, c)) = STRONG.iter().find(|(w, _)| *w == lower) {
        return Some((c, true));
    }
    if let Some(&(_, c)) = WEAK.iter().find(|(w, _)| *w == lower) {
        return Some((c, false));
    }
    // A lone consonant ("n v r", "N.V.R.") is a spelled letter.
    let mut chars = lower.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && c.is_ascii_alphabetic()
    {
        return Some((c.to_ascii_uppercase(), !"aeiouy".contains(c)));
    }
    None
}

/// Replaces each run of spoken letters with the acronym it spells. A run
/// needs two strong letter names, or one among at least three letters or
/// beside lone letters only.
pub fn fold_acronyms(text: &str) -> String {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|t| !t.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if let Some(acronym) = dotted(tokens[i]) {
            out.push(acronym);
            i += 1;
            continue;
        }
        let mut j = i;
        let mut strong = 0;
        let mut weak_words = 0;
        let mut letters = String::new();
        while j < tokens.len() {
            let bare =
                tokens[j].trim_matches(|c: char| matches!(c, '.' | ',' | '?' | '!' | ';' | ':'));
            let Some((c, is_strong)) = letter(bare) else {
                break;
            };
            letters.push(c);
            strong += is_strong as usize;
            weak_words += (!is_strong && bare.chars().count() > 1) as usize;
            j += 1;
            // Punctuation after a letter ends the spelled word ("vé erre, la").
            if tokens[j - 1].ends_with([',', '?', '!', ';', ':']) {
                break;
            }
        }
        let run = j - i;
        // "i pé" (IP): one strong name beside lone letters is enough too.
        if run >= 2 && (strong >= 2 || (strong >= 1 && (run >= 3 || weak_words == 0))) {
            let tail: String = tokens[j - 1]
                .chars()
                .rev()
                .take_while(|c| matches!(c, ',' | '?' | '!' | ';' | ':'))
                .collect();
            out.push(format!("{letters}{tail}"));
            i = j;
        } else {
            out.push(tokens[i].to_string());
            i += 1;
        }
    }
    out.join(" ")
}

/// "N.V.R." or "p.o.e": letters with dots between them.
fn dotted(token: &str) -> Option<String> {
    let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
    let single = |p: &&str| p.chars().count() == 1 && p.chars().all(|c| c.is_ascii_alphabetic());
    (parts.len() >= 2 && token.contains('.') && parts.iter().all(single))
        .then(|| parts.concat().to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::fold_acronyms as f;

    #[test]
    fn spelled_acronyms_fold() {
        assert_eq!(
            f("le haine vé erre ne démarre plus"),
            "le NVR ne démarre plus"
        );
        assert_eq!(f("mon dé vé erre, il bipe"), "mon DVR, il bipe");
        assert_eq!(
            f("pas de pé o eu sur le switch"),
            "pas de POE sur le switch"
        );
        assert_eq!(f("the en vee are is beeping"), "the NVR is beeping");
        assert_eq!(f("le N.V.R. est planté"), "le NVR est planté");
        assert_eq!(f("haine-vé-erre"), "NVR");
        assert_eq!(f("un conflit d'adresse i pé"), "un conflit d'adresse IP");
        assert_eq!(f("problème de dé en esse"), "problème de DNS");
    }

    #[test]
    fn ordinary_words_stay() {
        for s in [
            "elle a un problème",
            "il y a une caméra",
            "the door is open",
            "la porte est en panne",
            "j'ai un écran noir",
        ] {
            assert_eq!(f(s), s);
        }
    }
}
