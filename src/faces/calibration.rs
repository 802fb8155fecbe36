//! Calibration: a monotone map from cosine similarity to a 0–100 confidence,
//! fitted per pack on labelled pairs so that 80 is a strict operating point,
//! same-person pairs land mostly above 95 and different people mostly below 20.
//!
//! The map is piecewise linear in log-odds: each anchor `[cosine, confidence]`
//! is met exactly, and the end segments extend with their slopes, so the
//! curve is smooth-looking, strictly increasing and never reaches 0 or 100.
use anyhow::ensure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Always "logit-linear".
    pub kind: String,
    /// Anchors `[cosine, confidence]`, strictly increasing in both.
    pub points: Vec<[f64; 2]>,
    /// Anything the fit recorded (data set, expected FMR/FNMR, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn logit(p: f64) -> f64 {
    let p = (p / 100.0).clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

impl Calibration {
    pub fn new(points: Vec<[f64; 2]>) -> Self {
        Self {
            kind: "logit-linear".into(),
            points,
            extra: Default::default(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.kind == "logit-linear",
            "unknown calibration kind {:?} (expected \"logit-linear\")",
            self.kind
        );
        ensure!(self.points.len() >= 2, "need at least two anchors");
        for w in self.points.windows(2) {
            ensure!(
                w[0][0] < w[1][0] && w[0][1] < w[1][1],
                "anchors must increase in cosine and confidence: {:?}",
                self.points
            );
        }
        for p in &self.points {
            ensure!(
                p[0].is_finite() && p[1] > 0.0 && p[1] < 100.0,
                "anchor {p:?}: confidence must lie strictly between 0 and 100"
            );
        }
        Ok(())
    }

    /// Confidence 0–100 rounded to 2 decimals (the number the API returns).
    pub fn confidence(&self, cosine: f32) -> f64 {
        let c = cosine as f64;
        let pts = &self.points;
        let i = pts
            .windows(2)
            .position(|w| c < w[1][0])
            .unwrap_or(pts.len() - 2);
        let (a, b) = (pts[i], pts[i + 1]);
        let z = logit(a[1]) + (c - a[0]) * (logit(b[1]) - logit(a[1])) / (b[0] - a[0]);
        round2(100.0 / (1.0 + (-z.clamp(-700.0, 700.0)).exp()))
    }
}

impl Calibration {
    /// The cosine at which the map gives `confidence` (its inverse; the end
    /// segments extend with their slopes, as the map does).
    pub fn cosine_at(&self, confidence: f64) -> f64 {
        let pts = &self.points;
        let i = pts
            .windows(2)
            .position(|w| confidence < w[1][1])
            .unwrap_or(pts.len() - 2);
        let (a, b) = (pts[i], pts[i + 1]);
        a[0] + (logit(confidence) - logit(a[1])) * (b[0] - a[0]) / (logit(b[1]) - logit(a[1]))
    }

    /// The child map: the same curve moved along the cosine axis so that 80
    /// sits where this (adult) map gives `at_adult` (96 in the shipped packs).
    pub fn shifted_for_children(&self, at_adult: f64) -> Calibration {
        let shift = self.cosine_at(at_adult) - self.cosine_at(80.0);
        let mut c = Calibration::new(self.points.iter().map(|p| [p[0] + shift, p[1]]).collect());
        c.extra.insert("shifted_by".into(), shift.into());
        c
    }
}

/// Lowest confidence returned when both faces were found: the API promises
/// `> 0` then, and the map alone rounds very dissimilar pairs to 0.00.
pub const FLOOR: f64 = 0.01;

/// Which map decided a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Map {
    Adult,
    Child,
}

/// The child calibration and when it applies.
#[derive(Debug, Clone)]
pub struct ChildRule {
    pub map: Calibration,
    /// `child_age_limit`: one face must be estimated under it.
    pub limit: f32,
    /// `child_age_margin`: the other face under `limit + margin` (the age
    /// estimate errs by years near the limit; a teenager read as 19–24 must
    /// not put a pair of children on the adult map).
    pub margin: f32,
}

impl ChildRule {
    /// Whether a pair of estimated ages is scored with the child map: one
    /// face under the limit and the other under the limit plus the margin.
    pub fn applies(&self, a: f32, b: f32) -> bool {
        let (young, old) = if a <= b { (a, b) } else { (b, a) };
        young < self.limit && old < self.limit + self.margin
    }

    /// Whether a source face of this age can be on the child map with some
    /// target face: the target's ages matter only then.
    pub fn source_may_be_child(&self, source_age: f32) -> bool {
        source_age < self.limit + self.margin
    }
}

/// The pack's decision rule: the adult calibration, and — when the pack has
/// an age model — the child calibration for pairs of estimated children
/// ([`ChildRule::applies`]).
#[derive(Debug, Clone)]
pub struct Policy {
    pub adult: Calibration,
    pub child: Option<ChildRule>,
}

impl Policy {
    pub fn new(adult: Calibration, age: Option<&super::pack::AgeSpec>) -> Self {
        let child = age.map(|a| ChildRule {
            map: adult.shifted_for_children(a.child_80_at_adult),
            limit: a.child_age_limit,
            margin: a.child_age_margin,
        });
        Self { adult, child }
    }

    /// The confidence the adult map gives (the number returned when the age
    /// pass did not run).
    pub fn adult_confidence(&self, cosine: f32) -> f64 {
        self.adult.confidence(cosine).max(FLOOR)
    }

    /// Whether the ages can change the decision at `threshold` for this
    /// cosine: the adult map and the child map fall on different sides of it.
    pub fn ages_matter(&self, cosine: f32, threshold: f64) -> bool {
        match &self.child {
            None => false,
            Some(c) => {
                let child = c.map.confidence(cosine).max(FLOOR);
                (self.adult_confidence(cosine) >= threshold) != (child >= threshold)
            }
        }
    }

    /// Confidence of one scored pair (both faces found) and the map used:
    /// the child map only when **both** ages are known and the rule applies.
    pub fn confidence(&self, cosine: f32, ages: (Option<f32>, Option<f32>)) -> (f64, Map) {
        match (&self.child, ages) {
            (Some(c), (Some(a), Some(b))) if c.applies(a, b) => {
                (c.map.confidence(cosine).max(FLOOR), Map::Child)
            }
            _ => (self.adult_confidence(cosine), Map::Adult),
        }
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Linear-interpolated quantile of sorted data, q in [0, 1].
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// What a fit decided and what it expects at the operating point.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub genuine: usize,
    pub impostor: usize,
    pub cosine_at_20: f64,
    pub cosine_at_80: f64,
    pub cosine_at_95: f64,
    /// Where a normal fit of the impostor scores puts a 1e-4 false-match rate.
    pub cosine_at_normal_fmr_1e4: f64,
    pub fmr_at_80: f64,
    pub fnmr_at_80: f64,
    pub genuine_p5_confidence: f64,
    pub impostor_p99_confidence: f64,
    pub genuine_above_95: f64,
    pub impostor_below_20: f64,
}

/// Margin above the highest impostor cosine at which 80 is put, in standard
/// deviations of the impostor scores (packs spread their scores differently:
/// dlib's sit within a few hundredths of each other).
pub const MARGIN_80_SD: f64 = 0.15;

/// Fits the map on genuine and impostor cosines:
/// - 80 just above the highest impostor seen (+[`MARGIN_80_SD`]): no impostor
///   of the fitting set reaches it; with ~1,500 impostor pairs that is all
///   the false-match rate the data can show;
/// - 20 at the impostors' 95th percentile: different people mostly below 20;
/// - 95 at the genuine pairs' 30th percentile: the same person mostly above 95.
pub fn fit(genuine: &[f64], impostor: &[f64]) -> anyhow::Result<(Calibration, FitReport)> {
    ensure!(
        genuine.len() >= 5 && impostor.len() >= 20,
        "need at least 5 same-person and 20 different-person pairs"
    );
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (gen_, imp) = (sorted(genuine), sorted(impostor));
    let n = imp.len() as f64;
    let mean = imp.iter().sum::<f64>() / n;
    let sd = (imp.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0))
        .sqrt()
        .max(1e-4);
    let c80 = imp[imp.len() - 1] + MARGIN_80_SD * sd;
    let c20 = quantile(&imp, 0.95).min(c80 - 0.5 * sd);
    let c95 = quantile(&gen_, 0.30).max(c80 + 0.5 * sd);
    let mut cal = Calibration::new(vec![[c20, 20.0], [c80, 80.0], [c95, 95.0]]);
    let conf = |c: &f64| cal.confidence(*c as f32);
    let gen_conf: Vec<f64> = gen_.iter().map(conf).collect();
    let imp_conf: Vec<f64> = imp.iter().map(conf).collect();
    let frac = |v: &[f64], f: &dyn Fn(f64) -> bool| {
        v.iter().filter(|&&x| f(x)).count() as f64 / v.len() as f64
    };
    let report = FitReport {
        genuine: gen_.len(),
        impostor: imp.len(),
        cosine_at_20: c20,
        cosine_at_80: c80,
        cosine_at_95: c95,
        cosine_at_normal_fmr_1e4: mean + 3.719 * sd,
        fmr_at_80: frac(&imp_conf, &|x| x >= 80.0),
        fnmr_at_80: frac(&gen_conf, &|x| x < 80.0),
        genuine_p5_confidence: quantile(&gen_conf, 0.05),
        impostor_p99_confidence: quantile(&imp_conf, 0.99),
        genuine_above_95: frac(&gen_conf, &|x| x > 95.0),
        impostor_below_20: frac(&imp_conf, &|x| x < 20.0),
    };
    cal.extra
        .insert("fit".into(), serde_json::to_value(&report)?);
    Ok((cal, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_meets_its_anchors_and_is_monotone() {
        let c = Calibration::new(vec![[0.25, 20.0], [0.5, 80.0], [0.7, 95.0]]);
        c.validate().unwrap();
        assert_eq!(c.confidence(0.25), 20.0);
        assert_eq!(c.confidence(0.5), 80.0);
        assert_eq!(c.confidence(0.7), 95.0);
        let mut last = -1.0;
        for i in -100..=100 {
            let v = c.confidence(i as f32 / 100.0);
            assert!((0.0..=100.0).contains(&v));
            assert!(v >= last, "not monotone at {i}");
            last = v;
        }
        assert!(c.confidence(-1.0) < 1.0 && c.confidence(1.0) > 99.0);
    }

    #[test]
    fn fit_puts_80_above_every_impostor() {
        let impostor: Vec<f64> = (0..400).map(|i| -0.1 + 0.4 * (i as f64 / 399.0)).collect();
        let genuine: Vec<f64> = (0..50).map(|i| 0.4 + 0.5 * (i as f64 / 49.0)).collect();
        let (cal, rep) = fit(&genuine, &impostor).unwrap();
        cal.validate().unwrap();
        assert_eq!(rep.fmr_at_80, 0.0);
        assert!(
            cal.confidence(0.3) < 80.0 && cal.confidence(0.33) >= 80.0,
            "{rep:?}"
        );
        assert!(rep.impostor_below_20 >= 0.85, "{rep:?}");
        assert!(rep.genuine_above_95 >= 0.69, "{rep:?}");
        assert!(rep.fnmr_at_80 < 0.1, "{rep:?}");
    }

    #[test]
    fn rejects_bad_anchors() {
        assert!(
            Calibration::new(vec![[0.5, 80.0], [0.4, 90.0]])
                .validate()
                .is_err()
        );
        assert!(Calibration::new(vec![[0.5, 80.0]]).validate().is_err());
        assert!(
            Calibration::new(vec![[0.1, 0.0], [0.4, 90.0]])
                .validate()
                .is_err()
        );
        let mut c = Calibration::new(vec![[0.1, 10.0], [0.4, 90.0]]);
        c.kind = "table".into();
        assert!(c.validate().is_err());
    }
}
