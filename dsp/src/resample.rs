//! Arbitrary-ratio resampling for whole recordings (replay, simulator input).
//! Not for the per-frame path: it works on a complete buffer.

use std::f64::consts::PI;

/// Zero crossings of the sinc kept on each side.
const HALF_WIDTH: f64 = 16.0;

/// Resamples mono `input` from `from` Hz to `to` Hz with a Blackman-windowed
/// sinc whose cut-off sits below the lower of the two Nyquist frequencies.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let ratio = to as f64 / from as f64;
    // Cut-off relative to the input rate; 0.95 leaves room for the transition band.
    let cutoff = 0.5 * ratio.min(1.0) * 0.95;
    let reach = (HALF_WIDTH / (2.0 * cutoff)).ceil() as i64;
    let out_len = ((input.len() as f64) * ratio).round() as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let centre = n as f64 / ratio;
        let first = (centre.floor() as i64 - reach).max(0);
        let last = (centre.floor() as i64 + reach).min(input.len() as i64 - 1);
        let mut acc = 0.0;
        let mut norm = 0.0;
        for i in first..=last {
            let t = i as f64 - centre;
            let x = 2.0 * cutoff * t;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (PI * x).sin() / (PI * x)
            };
            let w_pos = (t / reach as f64 + 1.0) * 0.5;
            if !(0.0..=1.0).contains(&w_pos) {
                continue;
            }
            let w = 0.42 - 0.5 * (2.0 * PI * w_pos).cos() + 0.08 * (4.0 * PI * w_pos).cos();
            let k = sinc * w;
            acc += input[i as usize] as f64 * k;
            norm += k;
        }
        out.push(if norm.abs() > 1e-12 {
            (acc / norm) as f32
        } else {
            0.0
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_follows_the_ratio_and_tone_survives() {
        let input: Vec<f32> = (0..44100)
            .map(|i| (2.0 * PI * 500.0 * i as f64 / 44100.0).sin() as f32 * 0.5)
            .collect();
        let out = resample(&input, 44100, 8000);
        assert_eq!(out.len(), 8000);
        let peak = out[1000..7000].iter().fold(0f32, |m, &x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 0.02, "peak {peak}");
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed() {
        let input: Vec<f32> = (0..48000)
            .map(|i| (2.0 * PI * 6000.0 * i as f64 / 48000.0).sin() as f32 * 0.5)
            .collect();
        let out = resample(&input, 48000, 8000);
        let peak = out[500..7500].iter().fold(0f32, |m, &x| m.max(x.abs()));
        assert!(peak < 0.01, "6 kHz leaked through at {peak}");
    }
}
