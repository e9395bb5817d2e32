//! A search hit's confidence: the probability, calibrated on labelled
//! queries, that it is the article the caller needs. The fused (RRF) score
//! orders hits but says nothing absolute: an off-topic question still has a
//! rank 1. So the confidence also looks at the dense cosine similarity, and
//! at how far the hit stands above the others.
//!
//! `callpipe kb calibrate QUERIES` fits the four coefficients on a labelled
//! set and prints them for `[capabilities.knowledge] calibration`.

use serde::{Deserialize, Serialize};

/// What the confidence of one hit is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Features {
    /// Cosine similarity of the query and the article's best chunk.
    pub cosine: f32,
    /// The hit's ranking score minus the best other hit's, both scaled to
    /// 0..1 (negative when another article ranks higher).
    pub gap: f32,
    /// Fused score over its maximum (1.0: first on both sides).
    pub fused: f32,
    /// Share of the query's glossary concepts the article mentions (0 when
    /// the query names none). Unlike the gap and the fused rank, it does not
    /// depend on how many other articles the store holds.
    pub coverage: f32,
}

/// `p = sigmoid(bias + cosine·c + gap·g + fused·f + coverage·v)`
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub bias: f32,
    pub cosine: f32,
    pub gap: f32,
    pub fused: f32,
    /// Absent in calibrations fitted before coverage existed: 0.
    #[serde(default)]
    pub coverage: f32,
}

const N: usize = 5;

impl Features {
    fn row(&self) -> [f64; N] {
        [
            1.0,
            self.cosine as f64,
            self.gap as f64,
            self.fused as f64,
            self.coverage as f64,
        ]
    }
}

impl Default for Calibration {
    /// Fitted with `callpipe kb calibrate` on the tuning halves only, over
    /// two stores at once so it holds on both sizes: the 60 shared articles
    /// (phrasings and calls) and the 10-article sample KB (README, Answer
    /// quality, has the command).
    fn default() -> Self {
        Calibration {
            bias: -37.72,
            cosine: 35.25,
            gap: 23.67,
            fused: 0.07,
            coverage: 7.08,
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Calibration {
    fn weights(&self) -> [f64; N] {
        [
            self.bias as f64,
            self.cosine as f64,
            self.gap as f64,
            self.fused as f64,
            self.coverage as f64,
        ]
    }

    pub fn confidence(&self, f: &Features) -> f32 {
        let x: f64 = self.weights().iter().zip(f.row()).map(|(w, x)| w * x).sum();
        sigmoid(x) as f32
    }

    /// Logistic regression by Newton's method, lightly regularised so a
    /// separable set still gives finite weights.
    pub fn fit(samples: &[(Features, bool)]) -> Option<Calibration> {
        if samples.is_empty() || samples.iter().all(|s| s.1) || samples.iter().all(|s| !s.1) {
            return None;
        }
        let mut w = [0.0f64; N];
        const L2: f64 = 1e-2;
        for _ in 0..50 {
            let mut grad = [0.0f64; N];
            let mut hess = [[0.0f64; N]; N];
            for (f, y) in samples {
                let x = f.row();
                let p = sigmoid((0..N).map(|i| w[i] * x[i]).sum());
                let r = p - if *y { 1.0 } else { 0.0 };
                for i in 0..N {
                    grad[i] += r * x[i];
                    for j in 0..N {
                        hess[i][j] += p * (1.0 - p) * x[i] * x[j];
                    }
                }
            }
            for i in 1..N {
                grad[i] += L2 * w[i];
                hess[i][i] += L2;
            }
            let step = solve(hess, grad)?;
            let mut moved = 0.0f64;
            for i in 0..N {
                w[i] -= step[i];
                moved = moved.max(step[i].abs());
            }
            if moved < 1e-6 {
                break;
            }
        }
        Some(Calibration {
            bias: w[0] as f32,
            cosine: w[1] as f32,
            gap: w[2] as f32,
            fused: w[3] as f32,
            coverage: w[4] as f32,
        })
    }
}

/// Gaussian elimination with partial pivoting.
fn solve(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for r in col + 1..N {
            let k = a[r][col] / pivot_row[col];
            for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                *x -= k * p;
            }
            b[r] -= k * b[col];
        }
    }
    let mut x = [0.0; N];
    for r in (0..N).rev() {
        let s: f64 = (r + 1..N).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// How well confidences match outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct Reliability {
    /// Mean squared error of the probabilities (lower is better).
    pub brier: f64,
    /// Expected calibration error over `bins` (lower is better).
    pub ece: f64,
    /// (mean confidence, observed accuracy, count) per tenth.
    pub bins: Vec<(f64, f64, usize)>,
}

pub fn reliability(scored: &[(f32, bool)]) -> Reliability {
    let n = scored.len().max(1) as f64;
    let brier = scored
        .iter()
        .map(|(p, y)| (*p as f64 - if *y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / n;
    let mut bins = vec![(0.0f64, 0.0f64, 0usize); 10];
    for (p, y) in scored {
        let b = ((*p as f64 * 10.0) as usize).min(9);
        bins[b].0 += *p as f64;
        bins[b].1 += if *y { 1.0 } else { 0.0 };
        bins[b].2 += 1;
    }
    let mut ece = 0.0;
    for b in &mut bins {
        if b.2 > 0 {
            b.0 /= b.2 as f64;
            b.1 /= b.2 as f64;
            ece += (b.0 - b.1).abs() * b.2 as f64 / n;
        }
    }
    Reliability { brier, ece, bins }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(cosine: f32, gap: f32) -> Features {
        Features {
            cosine,
            gap,
            fused: 0.5,
            coverage: 0.5,
        }
    }

    #[test]
    fn fit_separates_and_orders() {
        // Right answers: high cosine and a clear gap; wrong ones: the rest.
        let mut samples = Vec::new();
        for i in 0..40 {
            let t = i as f32 / 40.0;
            samples.push((f(0.85 + 0.1 * t, 0.05 + 0.05 * t), true));
            samples.push((f(0.80 + 0.1 * t, -0.05 - 0.05 * t), false));
            samples.push((f(0.75 + 0.05 * t, 0.02 * t - 0.01), i % 4 == 0));
        }
        let c = Calibration::fit(&samples).unwrap();
        assert!(c.gap > 0.0, "{c:?}");
        let good = c.confidence(&f(0.9, 0.08));
        let bad = c.confidence(&f(0.85, -0.08));
        assert!(good > 0.8 && bad < 0.2, "good {good}, bad {bad}");
        let scored: Vec<(f32, bool)> = samples.iter().map(|(x, y)| (c.confidence(x), *y)).collect();
        let r = reliability(&scored);
        assert!(r.brier < 0.15, "{r:?}");
    }

    #[test]
    fn a_one_sided_set_cannot_be_fitted() {
        assert!(Calibration::fit(&[(f(0.9, 0.1), true)]).is_none());
        assert!(Calibration::fit(&[]).is_none());
    }

    #[test]
    fn the_default_maps_features_into_0_1() {
        let c = Calibration::default();
        let hi = c.confidence(&Features {
            cosine: 0.95,
            gap: 0.1,
            fused: 1.0,
            coverage: 1.0,
        });
        let lo = c.confidence(&Features {
            cosine: 0.7,
            gap: -0.05,
            fused: 0.3,
            coverage: 0.0,
        });
        assert!((0.0..=1.0).contains(&hi) && (0.0..=1.0).contains(&lo));
        assert!(hi > lo);
    }
}
