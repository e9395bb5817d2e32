//! ITU-T G.711 mu-law, bit-exact with the ITU-T G.191 reference
//! implementation (`ulaw_compress` / `ulaw_expand`): 16-bit linear samples in,
//! left-justified 14-bit values out.

/// Decoded value of every mu-law code, computed once at compile time.
pub const DECODE_TABLE: [i16; 256] = build_decode_table();

const fn expand(code: u8) -> i16 {
    // G.191: the code is stored inverted; bit 7 set means positive.
    let inverted = !code;
    let exponent = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0F) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if code < 0x80 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = expand(code as u8);
        code += 1;
    }
    table
}

/// Decodes one mu-law code to 16-bit linear PCM.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE_TABLE[code as usize]
}

/// Encodes one 16-bit linear sample to mu-law (G.191 `ulaw_compress`).
#[inline]
pub fn encode(sample: i16) -> u8 {
    // Negative values use the one's complement, as the reference does.
    let magnitude = if sample < 0 { !sample } else { sample };
    let absno = ((magnitude >> 2) as i32 + 33).min(0x1FFF);
    // Segment number: position of the highest set bit above bit 5.
    let segno = (32 - ((absno >> 6) as u32).leading_zeros()) as i32 + 1;
    let high_nibble = 0x08 - segno;
    let low_nibble = 0x0F - ((absno >> segno) & 0x0F);
    let code = ((high_nibble << 4) | low_nibble) as u8;
    if sample >= 0 { code | 0x80 } else { code }
}

/// Decodes a buffer; `out` must be at least as long as `codes`.
pub fn decode_into(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = decode(c);
    }
}

/// Encodes a buffer; `out` must be at least as long as `samples`.
pub fn encode_into(samples: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = encode(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The G.191 reference encoder, transcribed literally (loop and all) so
    /// the optimised `encode` is checked against an independent formulation.
    fn reference_compress(lin: i16) -> u8 {
        let absno: i32 = if lin < 0 {
            ((!lin) >> 2) as i32 + 33
        } else {
            (lin >> 2) as i32 + 33
        };
        let absno = if absno > 0x1FFF { 0x1FFF } else { absno };
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high = 0x0008 - segno;
        let low = 0x000F - ((absno >> segno) & 0x000F);
        let mut out = (high << 4) | low;
        if lin >= 0 {
            out |= 0x0080;
        }
        out as u8
    }

    #[test]
    fn decode_matches_published_values() {
        // Values from the G.711 mu-law table (G.191 scaling, 16-bit).
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0xFE), 8);
        assert_eq!(decode(0x7E), -8);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0xF0), 120);
        assert_eq!(decode(0xEF), 132);
        assert_eq!(decode(0xDF), 396);
        assert_eq!(decode(0xCF), 924);
        assert_eq!(decode(0x8F), 16764);
        assert_eq!(decode(0x81), 31100);
    }

    #[test]
    fn decode_table_is_odd_symmetric_and_monotonic() {
        for code in 0..128u8 {
            assert_eq!(decode(code), -decode(code | 0x80), "code {code:#04x}");
        }
        // Positive codes decrease in magnitude from 0x80 to 0xFF.
        for code in 0x80..0xFFu8 {
            assert!(decode(code) > decode(code + 1), "code {code:#04x}");
        }
    }

    #[test]
    fn encode_is_bit_exact_for_the_whole_16_bit_range() {
        for lin in i16::MIN..=i16::MAX {
            assert_eq!(encode(lin), reference_compress(lin), "sample {lin}");
        }
    }

    #[test]
    fn every_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code }; // -0 encodes as +0
            assert_eq!(encode(decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn encode_picks_the_nearest_level_inside_a_segment() {
        // Quantisation error never exceeds half a step of the chosen segment,
        // except where the top segment clips.
        for lin in (0..=32000i16).step_by(7) {
            let back = decode(encode(lin)) as i32;
            let err = (back - lin as i32).abs();
            assert!(err <= 512 + 4, "sample {lin} -> {back}");
        }
    }
}
