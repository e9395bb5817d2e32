//! A search hit's confidence: the probability, calibrated on labelled
//! queries, that it is the article the caller needs. The fused (RRF) score
//! orders hits but says nothing absolute: an off-topic question still has a
//! rank 1. So the confidence also looks at the dense cosine similarity, and
//! at how far the hit stands above the others.
//!
//! Each store fits its own calibration when articles are imported
//! (`selfcal`): questions taken from its own articles, asked with and
//! without the article they came from. `callpipe kb calibrate QUERIES` fits
//! it on labelled questions a user brings instead.

use serde::{Deserialize, Serialize};

/// What the confidence of one hit is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Features {
    /// Cosine similarity of the query and the article's best chunk, both
    /// measured from the store's centre when it has one (`centre`).
    pub cosine: f32,
    /// Its cosine minus the best other article's (negative when another
    /// is closer), clamped.
    pub gap: f32,
    /// Its cosine minus the mean of the closest articles': how far it
    /// stands out of the crowd (an off-topic question is about as close to
    /// many).
    pub spread: f32,
    /// Hybrid ranking: fused score over its maximum (1.0: first on both
    /// sides); dense only: 1.0 for the first hit, else 0.
    pub fused: f32,
}

/// `p = sigmoid(bias + cosine·c + gap·g + spread·s + fused·f)`
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub bias: f32,
    pub cosine: f32,
    pub gap: f32,
    #[serde(default)]
    pub spread: f32,
    pub fused: f32,
}

const N: usize = 5;

impl Features {
    fn row(&self) -> [f64; N] {
        [
            1.0,
            self.cosine as f64,
            self.gap as f64,
            self.spread as f64,
            self.fused as f64,
        ]
    }
}

impl Default for Calibration {
    /// Only for a store that has not fitted its own yet (made by an older
    /// version and not imported into since): strict on purpose, so such a
    /// store shows few articles rather than wrong ones until `kb import`
    /// or the next start fits it.
    fn default() -> Self {
        Calibration {
            bias: -40.0,
            cosine: 40.0,
            gap: 25.0,
            spread: 0.0,
            fused: 0.0,
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
            self.spread as f64,
            self.fused as f64,
        ]
    }

    pub fn confidence(&self, f: &Features) -> f32 {
        let x: f64 = self.weights().iter().zip(f.row()).map(|(w, x)| w * x).sum();
        sigmoid(x) as f32
    }

    /// Logistic regression by Newton's method, lightly regularised so a
    /// separable set still gives finite weights.
    pub fn fit(samples: &[(Features, bool)]) -> Option<Calibration> {
        let weighted: Vec<(Features, bool, f64)> =
            samples.iter().map(|&(f, y)| (f, y, 1.0)).collect();
        Self::fit_weighted(&weighted)
    }

    /// The same with a weight per sample (how many cases of the traffic it
    /// stands for).
    pub fn fit_weighted(samples: &[(Features, bool, f64)]) -> Option<Calibration> {
        if samples.is_empty() || samples.iter().all(|s| s.1) || samples.iter().all(|s| !s.1) {
            return None;
        }
        let mut w = [0.0f64; N];
        const L2: f64 = 1e-2;
        for _ in 0..50 {
            let mut grad = [0.0f64; N];
            let mut hess = [[0.0f64; N]; N];
            for (f, y, weight) in samples {
                let x = f.row();
                let p = sigmoid((0..N).map(|i| w[i] * x[i]).sum());
                let r = (p - if *y { 1.0 } else { 0.0 }) * weight;
                for i in 0..N {
                    grad[i] += r * x[i];
                    for j in 0..N {
                        hess[i][j] += weight * p * (1.0 - p) * x[i] * x[j];
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
            spread: w[3] as f32,
            fused: w[4] as f32,
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
    let weighted: Vec<(f32, bool, f64)> = scored.iter().map(|&(p, y)| (p, y, 1.0)).collect();
    reliability_weighted(&weighted)
}

/// The same, each case standing for `weight` of the traffic (bin counts
/// stay counts of cases).
pub fn reliability_weighted(scored: &[(f32, bool, f64)]) -> Reliability {
    let total: f64 = scored
        .iter()
        .map(|s| s.2)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let brier = scored
        .iter()
        .map(|(p, y, w)| w * (*p as f64 - if *y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / total;
    // (weighted confidence, weighted right, weight, count) per tenth.
    let mut acc = vec![(0.0f64, 0.0f64, 0.0f64, 0usize); 10];
    for (p, y, w) in scored {
        let b = ((*p as f64 * 10.0) as usize).min(9);
        acc[b].0 += w * *p as f64;
        acc[b].1 += if *y { *w } else { 0.0 };
        acc[b].2 += w;
        acc[b].3 += 1;
    }
    let mut ece = 0.0;
    let mut bins = Vec::with_capacity(10);
    for (p, y, w, n) in acc {
        if w > 0.0 {
            ece += (p / w - y / w).abs() * w / total;
            bins.push((p / w, y / w, n));
        } else {
            bins.push((0.0, 0.0, 0));
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
            spread: gap,
            fused: 0.5,
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
            spread: 0.1,
            fused: 1.0,
        });
        let lo = c.confidence(&Features {
            cosine: 0.7,
            gap: -0.05,
            spread: 0.0,
            fused: 0.3,
        });
        assert!((0.0..=1.0).contains(&hi) && (0.0..=1.0).contains(&lo));
        assert!(hi > lo);
    }
}
