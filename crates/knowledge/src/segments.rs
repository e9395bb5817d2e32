//! A long question in windows. A sentence encoder turns a 40-word ramble
//! ("hello, I'm at the customer's since this morning, ... and the unit
//! trips") into one blurred vector; the search also scores each window of a
//! few words and averages them with the whole, so the part that carries
//! the fault counts. Words only, no list of any language's words.

/// Words per window, and how far each window moves on.
const WIDTH: usize = 8;
const STRIDE: usize = 4;

/// The windows of `text`, none when it is already short.
pub fn windows(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= WIDTH {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + WIDTH).min(words.len());
        out.push(words[end - WIDTH..end].join(" "));
        if end == words.len() {
            break;
        }
        start += STRIDE;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::windows;

    #[test]
    fn a_short_question_is_whole_and_a_long_one_is_covered() {
        assert!(windows("la porte ne s'ouvre plus du tout").is_empty());
        let text = "a b c d e f g h i j k l m";
        let w = windows(text);
        assert_eq!(w, ["a b c d e f g h", "e f g h i j k l", "f g h i j k l m"]);
        // Every word is in a window; each window has WIDTH words.
        for word in text.split_whitespace() {
            assert!(w.iter().any(|x| x.split(' ').any(|y| y == word)));
        }
        assert!(w.iter().all(|x| x.split(' ').count() == 8));
    }
}
