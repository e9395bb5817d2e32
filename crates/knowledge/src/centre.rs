//! Cosines measured from the store's own centre. Every article of one
//! knowledge base shares its trade, its style and its languages, so all its
//! chunks lean one way in the embedding space; the raw cosine of a question
//! with any of them is mostly that shared lean. Measured from the mean of
//! the store's chunk vectors instead, a cosine says what sets one article
//! apart from the others. The mean is the store's own, taken after each
//! import (with its calibration, `selfcal`), so it holds on any knowledge
//! base; nothing in it is a word list or a weight.
//!
//! The store keeps the raw vectors: a search fetches its nearest chunks by
//! raw cosine with their vectors, and they are rescored here. (Measured
//! once on the tuning halves while making this change: rescoring the raw
//! nearest 40 or 80 chunks ranked every question as centring all of them
//! did.)

use serde::{Deserialize, Serialize};

/// The mean of a store's chunk vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Centre {
    mean: Vec<f32>,
}

/// A question's vector, measured from a centre: unit length.
pub struct Centred {
    v: Vec<f32>,
    /// Its dot product with the centre.
    dot_mean: f32,
    /// The centre's squared length.
    mean_sq: f32,
}

impl Centre {
    /// The mean of `count` vectors summing to `sum`; `None` for no vector.
    pub fn from_sum(sum: Vec<f64>, count: usize) -> Option<Centre> {
        if count == 0 || sum.is_empty() {
            return None;
        }
        let mean = sum.iter().map(|s| (s / count as f64) as f32).collect();
        Some(Centre { mean })
    }

    pub fn dims(&self) -> usize {
        self.mean.len()
    }

    /// `q` minus the centre, scaled to unit length; `None` when the sizes
    /// differ or nothing is left.
    pub fn query(&self, q: &[f32]) -> Option<Centred> {
        if q.len() != self.mean.len() {
            return None;
        }
        let mut v: Vec<f32> = q.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
        let n = dot(&v, &v).sqrt();
        if n <= f32::EPSILON {
            return None;
        }
        v.iter_mut().for_each(|x| *x /= n);
        let dot_mean = dot(&v, &self.mean);
        let mean_sq = dot(&self.mean, &self.mean);
        Some(Centred {
            v,
            dot_mean,
            mean_sq,
        })
    }

    /// The cosine of a centred question and a stored chunk vector `p`,
    /// both measured from the centre, without building `p - centre`.
    pub fn cosine(&self, q: &Centred, p: &[f32]) -> Option<f32> {
        if p.len() != self.mean.len() {
            return None;
        }
        let (mut qp, mut pp, mut pm) = (0.0f32, 0.0f32, 0.0f32);
        for ((&a, &b), &m) in q.v.iter().zip(p).zip(&self.mean) {
            qp += a * b;
            pp += b * b;
            pm += b * m;
        }
        let norm = (pp - 2.0 * pm + q.mean_sq).max(0.0).sqrt();
        if norm <= f32::EPSILON {
            return Some(0.0);
        }
        Some((qp - q.dot_mean) / norm)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = dot(v, v).sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_cosine_is_the_one_of_the_centred_vectors() {
        let vs = [
            unit(&[1.0, 0.9, 0.1]),
            unit(&[0.9, 1.0, 0.0]),
            unit(&[1.0, 1.0, 0.3]),
        ];
        let mut sum = vec![0.0f64; 3];
        for v in &vs {
            for (s, x) in sum.iter_mut().zip(v) {
                *s += *x as f64;
            }
        }
        let c = Centre::from_sum(sum, vs.len()).expect("three vectors");
        let q = unit(&[1.0, 0.8, 0.2]);
        let cq = c.query(&q).expect("not the centre");
        for p in &vs {
            let a: Vec<f32> = q.iter().zip(&c.mean).map(|(x, m)| x - m).collect();
            let b: Vec<f32> = p.iter().zip(&c.mean).map(|(x, m)| x - m).collect();
            let want = dot(&a, &b) / (dot(&a, &a).sqrt() * dot(&b, &b).sqrt());
            let got = c.cosine(&cq, p).expect("same size");
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn the_shared_lean_no_longer_counts() {
        // Two articles that share most of their direction: raw cosines of a
        // question about the second barely differ, centred ones do.
        let a = unit(&[1.0, 0.15, 0.0]);
        let b = unit(&[1.0, 0.0, 0.15]);
        let q = unit(&[1.0, 0.0, 0.2]);
        let mut sum = vec![0.0f64; 3];
        for v in [&a, &b] {
            for (s, x) in sum.iter_mut().zip(v) {
                *s += *x as f64;
            }
        }
        let c = Centre::from_sum(sum, 2).expect("two vectors");
        let cq = c.query(&q).expect("not the centre");
        let raw = dot(&q, &b) - dot(&q, &a);
        let centred = c.cosine(&cq, &b).unwrap_or(0.0) - c.cosine(&cq, &a).unwrap_or(0.0);
        assert!(raw < 0.05 && centred > 1.0, "raw {raw}, centred {centred}");
    }

    #[test]
    fn sizes_that_differ_are_refused() {
        let c = Centre::from_sum(vec![1.0, 0.0], 1).expect("one vector");
        assert!(c.query(&[1.0, 0.0, 0.0]).is_none());
        assert!(Centre::from_sum(Vec::new(), 0).is_none());
        let cq = c.query(&[0.0, 1.0]).expect("not the centre");
        assert!(c.cosine(&cq, &[1.0]).is_none());
    }
}
