//! Calibration: a monotone map from cosine similarity to a 0–100 confidence,
//! fitted per pack so that 80 is a strict operating point (see `fit`).
use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// `confidence = 100 / (1 + exp(-k (cosine - m)))`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub kind: String,
    pub k: f64,
    pub m: f64,
    /// Anything the fit recorded (data set, expected FMR/FNMR, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Calibration {
    pub fn logistic(k: f64, m: f64) -> Self {
        Self { kind: "logistic".into(), k, m, extra: Default::default() }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.kind == "logistic", "unknown calibration kind {:?} (expected \"logistic\")", self.kind);
        ensure!(self.k.is_finite() && self.k > 0.0, "k must be a positive number (monotone map)");
        ensure!(self.m.is_finite(), "m must be a number");
        Ok(())
    }

    /// Confidence 0–100 rounded to 2 decimals (the number the API returns).
    pub fn confidence(&self, cosine: f32) -> f64 {
        let z = (-self.k * (cosine as f64 - self.m)).clamp(-700.0, 700.0);
        round2(100.0 / (1.0 + z.exp()))
    }

    /// The cosine at which the map reaches `confidence`.
    pub fn cosine_at(&self, confidence: f64) -> f64 {
        let p = (confidence / 100.0).clamp(1e-12, 1.0 - 1e-12);
        self.m + (p / (1.0 - p)).ln() / self.k
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
    /// Cosine that maps to 80.
    pub cosine_at_80: f64,
    /// Cosine that maps to 20.
    pub cosine_at_20: f64,
    pub fmr_at_80: f64,
    pub fnmr_at_80: f64,
    pub genuine_p5_confidence: f64,
    pub impostor_p99_confidence: f64,
    pub genuine_above_95: f64,
    pub impostor_below_20: f64,
}

/// Student-t-free tail estimate: z for a one-sided normal tail of 1e-4.
const Z_1E4: f64 = 3.719;

/// Fits the logistic map on genuine and impostor cosines.
///
/// 80 is put above every impostor seen (plus a margin) and above the normal
/// fit's 1e-4 tail of the impostor distribution, so the false-match rate at
/// 80 stays around 1e-4 even where the data cannot show it; 20 is put at the
/// impostors' 95th percentile, so different people mostly land below 20.
pub fn fit(genuine: &[f64], impostor: &[f64]) -> anyhow::Result<(Calibration, FitReport)> {
    ensure!(genuine.len() >= 5 && impostor.len() >= 20, "need at least 5 same-person and 20 different-person pairs");
    let mut imp = impostor.to_vec();
    imp.sort_by(f64::total_cmp);
    let mut gen_ = genuine.to_vec();
    gen_.sort_by(f64::total_cmp);
    let n = imp.len() as f64;
    let mean = imp.iter().sum::<f64>() / n;
    let sd = (imp.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let max_imp = *imp.last().unwrap();
    let c80 = (max_imp + 0.02).max(mean + Z_1E4 * sd);
    let c20 = quantile(&imp, 0.95).min(c80 - 0.05);
    let ln4 = 4f64.ln();
    let k = 2.0 * ln4 / (c80 - c20);
    let m = (c80 + c20) / 2.0;
    let mut cal = Calibration::logistic(k, m);
    let conf = |c: f64| cal.confidence(c as f32);
    let gen_conf: Vec<f64> = gen_.iter().map(|&c| conf(c)).collect();
    let imp_conf: Vec<f64> = imp.iter().map(|&c| conf(c)).collect();
    let frac = |v: &[f64], f: &dyn Fn(f64) -> bool| v.iter().filter(|&&x| f(x)).count() as f64 / v.len() as f64;
    let report = FitReport {
        genuine: gen_.len(),
        impostor: imp.len(),
        cosine_at_80: c80,
        cosine_at_20: c20,
        fmr_at_80: frac(&imp_conf, &|x| x >= 80.0),
        fnmr_at_80: frac(&gen_conf, &|x| x < 80.0),
        genuine_p5_confidence: quantile(&gen_conf, 0.05),
        impostor_p99_confidence: quantile(&imp_conf, 0.99),
        genuine_above_95: frac(&gen_conf, &|x| x > 95.0),
        impostor_below_20: frac(&imp_conf, &|x| x < 20.0),
    };
    cal.extra.insert("fit".into(), serde_json::to_value(&report)?);
    Ok((cal, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_monotone_and_bounded() {
        let c = Calibration::logistic(11.0, 0.33);
        let mut last = -1.0;
        for i in -100..=100 {
            let v = c.confidence(i as f32 / 100.0);
            assert!((0.0..=100.0).contains(&v));
            assert!(v >= last, "not monotone at {i}");
            last = v;
        }
        assert!((c.cosine_at(50.0) - 0.33).abs() < 1e-9);
        assert!((c.confidence(c.cosine_at(80.0) as f32) - 80.0).abs() < 0.05);
    }

    #[test]
    fn fit_puts_80_above_every_impostor() {
        let impostor: Vec<f64> = (0..400).map(|i| -0.1 + 0.4 * (i as f64 / 399.0)).collect();
        let genuine: Vec<f64> = (0..50).map(|i| 0.55 + 0.4 * (i as f64 / 49.0)).collect();
        let (cal, rep) = fit(&genuine, &impostor).unwrap();
        assert_eq!(rep.fmr_at_80, 0.0);
        assert!(cal.confidence(0.3) < 80.0);
        assert_eq!(rep.fnmr_at_80, 0.0);
        assert!(rep.impostor_below_20 >= 0.94, "{rep:?}");
        assert!(rep.cosine_at_80 > 0.3 && rep.cosine_at_20 < rep.cosine_at_80);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Calibration::logistic(-1.0, 0.0).validate().is_err());
        assert!(Calibration { kind: "table".into(), k: 1.0, m: 0.0, extra: Default::default() }.validate().is_err());
    }
}
