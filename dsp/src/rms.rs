//! Loudness measures on normalised samples.

/// Root mean square of `samples` scaled to -1.0..1.0; 0 for an empty slice.
#[inline]
pub fn rms_normalised(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    // Integer squares summed exactly (a 20 ms window cannot overflow i64),
    // scaled once: cheaper than a float per sample, and no rounding drift.
    let sum: i64 = samples.iter().map(|&s| (s as i64) * (s as i64)).sum();
    ((sum as f64 / samples.len() as f64).sqrt() / 32768.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_square_is_one_and_silence_is_zero() {
        assert_eq!(rms_normalised(&[]), 0.0);
        assert_eq!(rms_normalised(&[0; 160]), 0.0);
        let square: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert!((rms_normalised(&square) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn sine_rms_is_amplitude_over_sqrt2() {
        let s: Vec<i16> = (0..1600)
            .map(|i| {
                (10000.0 * (i as f64 * 2.0 * std::f64::consts::PI * 400.0 / 8000.0).sin()) as i16
            })
            .collect();
        let expected = 10000.0 / 32768.0 / 2f32.sqrt();
        assert!((rms_normalised(&s) - expected).abs() < 1e-3);
    }
}
