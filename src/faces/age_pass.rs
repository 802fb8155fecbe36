//! When a compare runs the age pass. The ages decide only through the child
//! rule, and only for a pair whose cosine the adult map and the child map put
//! on different sides of the request's threshold; so the cosines come first
//! and the age pass runs on the source face and those target faces only.
//! Every target face's decision (`isMatch`, Rekognition's `FaceMatches`) is
//! the one a full analysis of both images gives; the confidence returned is
//! the adult map's unless the ages decided.
use std::sync::Arc;

use serde::Serialize;

use super::{
    Side,
    calibration::Policy,
    detect::Face,
    embed,
    pipeline::{AgeInput, Analysis, Models},
};

/// Estimated ages of a compare's faces; `None` where the pass did not run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairAges {
    pub source: Option<f32>,
    /// One per target face, in target order.
    pub target: Vec<Option<f32>>,
}

impl PairAges {
    /// Whatever ages the analyses carry (a full analysis: every face).
    pub fn of(source: &Analysis, target: &Analysis) -> Self {
        Self {
            source: source.ages.first().copied(),
            target: (0..target.faces.len())
                .map(|i| target.ages.get(i).copied())
                .collect(),
        }
    }
}

/// Whether the age pass ran and why (`compare --explain`, the metric).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "agePass", rename_all = "camelCase")]
pub enum AgePass {
    /// The pack has no age model: every pair is on the adult map.
    NoAgeModel,
    /// A side has no face: nothing to decide.
    NoFace,
    /// Every target face is decided the same on both maps at the threshold.
    NotNeeded,
    /// The ages of every face were estimated up front (calibration, tests).
    Full,
    /// Ran on the source face and on `target_faces` (those whose cosine the
    /// two maps put on different sides of the threshold); the target faces'
    /// ages were estimated only when the source's allows a child pair.
    #[serde(rename_all = "camelCase")]
    Ran {
        target_faces: Vec<usize>,
        source_age: f32,
        target_ages: Vec<Option<f32>>,
    },
}

impl AgePass {
    /// For the metric: `Some(true)` ran, `Some(false)` skipped although it
    /// could have run, `None` when it could not run at all.
    pub fn ran(&self) -> Option<bool> {
        match self {
            AgePass::Ran { .. } | AgePass::Full => Some(true),
            AgePass::NotNeeded => Some(false),
            AgePass::NoAgeModel | AgePass::NoFace => None,
        }
    }
}

/// The target faces whose decision at `threshold` depends on the ages.
pub fn undecided_faces(
    policy: &Policy,
    source: &Analysis,
    target: &Analysis,
    threshold: f64,
) -> Vec<usize> {
    let Some(s) = source.embeddings.first() else {
        return Vec::new();
    };
    target
        .embeddings
        .iter()
        .enumerate()
        .filter(|(_, t)| policy.ages_matter(embed::cosine(s, t), threshold))
        .map(|(i, _)| i)
        .collect()
}

/// What a compare does about ages, decided from the cosines.
pub enum Plan {
    /// No age pass: the adult map answers.
    Skip(AgePass),
    /// The age pass to run before scoring.
    Run(AgeJob),
}

/// Decides whether the age pass must run for this compare at `threshold`.
pub fn plan(policy: &Policy, source: &Analysis, target: &Analysis, threshold: f64) -> Plan {
    let Some(rule) = &policy.child else {
        return Plan::Skip(AgePass::NoAgeModel);
    };
    if source.embeddings.is_empty() || target.embeddings.is_empty() {
        return Plan::Skip(AgePass::NoFace);
    }
    let undecided = undecided_faces(policy, source, target, threshold);
    if undecided.is_empty() {
        return Plan::Skip(AgePass::NotNeeded);
    }
    Plan::Run(AgeJob {
        source: source.age_input.clone(),
        source_face: source.faces[0].clone(),
        target: target.age_input.clone(),
        target_faces: undecided
            .iter()
            .map(|&i| (i, target.faces[i].clone()))
            .collect(),
        target_count: target.faces.len(),
        source_limit: rule.limit + rule.margin,
    })
}

/// The age pass of one compare: owned, so any worker can run it.
pub struct AgeJob {
    source: Option<Arc<AgeInput>>,
    source_face: Face,
    target: Option<Arc<AgeInput>>,
    target_faces: Vec<(usize, Face)>,
    target_count: usize,
    /// Target ages matter only for a source estimated under this.
    source_limit: f32,
}

impl AgeJob {
    /// Runs the age model of `models`.
    pub fn run(self, models: &mut Models) -> anyhow::Result<(PairAges, AgePass)> {
        self.run_with(|_, input, faces| {
            let input = input.ok_or_else(|| anyhow::anyhow!("no age input kept"))?;
            models.ages_of(input, faces)
        })
    }

    /// Runs with `estimate(side, kept input, faces)` giving each face's age:
    /// the source face first, then the target faces if the source's age
    /// allows a child pair.
    pub fn run_with(
        self,
        mut estimate: impl FnMut(Side, Option<&AgeInput>, &[(usize, Face)]) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<(PairAges, AgePass)> {
        let got = estimate(
            Side::Source,
            self.source.as_deref(),
            &[(0, self.source_face.clone())],
        )?;
        let source_age = *got
            .first()
            .ok_or_else(|| anyhow::anyhow!("no age for the source face"))?;
        let mut target = vec![None; self.target_count];
        if source_age < self.source_limit {
            let ages = estimate(Side::Target, self.target.as_deref(), &self.target_faces)?;
            anyhow::ensure!(
                ages.len() == self.target_faces.len(),
                "{} ages for {} target faces",
                ages.len(),
                self.target_faces.len()
            );
            for ((i, _), a) in self.target_faces.iter().zip(ages) {
                target[*i] = Some(a);
            }
        }
        let target_faces: Vec<usize> = self.target_faces.iter().map(|(i, _)| *i).collect();
        let target_ages = target_faces.iter().map(|&i| target[i]).collect();
        Ok((
            PairAges {
                source: Some(source_age),
                target,
            },
            AgePass::Ran {
                target_faces,
                source_age,
                target_ages,
            },
        ))
    }
}
