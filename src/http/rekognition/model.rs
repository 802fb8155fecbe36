//! `CompareFaces` request and response, field by field as Rekognition names
//! them, and the mapping from our [`Comparison`]. `Quality` and `Pose` are
//! [`crate::faces::quality`]'s measures; fields we cannot compute honestly
//! (Emotions, Smile, the mouth corners and jawline landmarks, the deprecated
//! orientation corrections) are omitted, never invented; docs/aws-sdks.md lists each field's source.
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::errors::AwsError;
use crate::{
    faces::{
        Comparison,
        quality::{self, Level},
        report::{FaceReport, ImageReport},
    },
    image_format,
    inputs::ImageInput,
};

/// AWS's limit on `Bytes` (5 MB), stricter than our 15 MB; S3 objects keep 15 MB as on AWS.
pub const MAX_AWS_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Largest body: two images at the `Bytes` limit in base64, plus JSON slack.
pub const MAX_AWS_BODY_BYTES: usize = 2 * (MAX_AWS_IMAGE_BYTES / 3 + 1) * 4 + 64 * 1024;
pub const DEFAULT_SIMILARITY_THRESHOLD: f64 = 80.0;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompareFacesRequest {
    pub source_image: Option<Image>,
    pub target_image: Option<Image>,
    pub similarity_threshold: Option<f64>,
    pub quality_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Image {
    pub bytes: Option<String>,
    pub s3_object: Option<S3Object>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct S3Object {
    pub bucket: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

/// `QualityFilter`: which detected faces count, by brightness, sharpness,
/// size and pose ([`quality::LOW`], [`quality::MEDIUM`], [`quality::HIGH`];
/// docs/quality.md has the table), never by the detector's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityFilter {
    None,
    Low,
    Medium,
    High,
}

impl QualityFilter {
    pub fn parse(s: Option<&str>) -> Result<Self, AwsError> {
        Ok(match s {
            None | Some("NONE") => QualityFilter::None,
            // AUTO: Rekognition picks the level; we pick MEDIUM.
            Some("AUTO") | Some("MEDIUM") => QualityFilter::Medium,
            Some("LOW") => QualityFilter::Low,
            Some("HIGH") => QualityFilter::High,
            Some(other) => {
                return Err(AwsError::invalid_parameter(format!(
                    "QualityFilter: {:?} is not one of NONE, AUTO, LOW, MEDIUM, HIGH",
                    other.chars().take(20).collect::<String>()
                )));
            }
        })
    }

    /// What a face must meet to be returned (None: every detected face).
    pub fn level(self) -> Option<&'static Level> {
        match self {
            QualityFilter::None => None,
            QualityFilter::Low => Some(&quality::LOW),
            QualityFilter::Medium => Some(&quality::MEDIUM),
            QualityFilter::High => Some(&quality::HIGH),
        }
    }

    pub fn admits(self, f: &FaceReport) -> bool {
        match (self.level(), &f.quality) {
            (None, _) => true,
            (Some(level), Some(q)) => q.passes(level),
            // Unmeasured: not known to meet the level.
            (Some(_), None) => false,
        }
    }
}

/// A validated request, ready for the compare operation.
#[derive(Debug)]
pub struct Parsed {
    pub source: ImageInput,
    pub target: ImageInput,
    pub threshold: f64,
    pub quality: QualityFilter,
}

pub fn parse(body: &[u8], configured_bucket: Option<&str>) -> Result<Parsed, AwsError> {
    let req: CompareFacesRequest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| AwsError::serialization(serialization_message(&e)))?;
    let threshold = req
        .similarity_threshold
        .unwrap_or(DEFAULT_SIMILARITY_THRESHOLD);
    if !crate::config::valid_threshold(threshold) {
        return Err(AwsError::invalid_parameter(
            "SimilarityThreshold: must be between 0 and 100",
        ));
    }
    let quality = QualityFilter::parse(req.quality_filter.as_deref())?;
    let source = image("SourceImage", req.source_image, configured_bucket)?;
    let target = image("TargetImage", req.target_image, configured_bucket)?;
    Ok(Parsed {
        source,
        target,
        threshold,
        quality,
    })
}

/// Names the field (`SourceImage.S3Object.Bucket`) and what was wrong, in the
/// request's own terms: serde's text names our Rust types (`struct S3Object`,
/// `f64`), which mean nothing to a client and describe the implementation.
fn serialization_message(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    let (line, column) = (inner.line(), inner.column());
    let what = match inner.classify() {
        serde_json::error::Category::Data => {
            let text = inner.to_string();
            let text = text.split(" at line ").next().unwrap_or_default();
            let expected = if text.contains("expected struct") || text.contains("expected a map") {
                "an object"
            } else if text.contains("expected f64") || text.contains("expected a number") {
                "a number"
            } else if text.contains("expected a string") {
                "a string"
            } else {
                "a value of the documented type"
            };
            format!("expected {expected}")
        }
        serde_json::error::Category::Eof => "the JSON ends early".to_string(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            "not valid JSON".to_string()
        }
    };
    let path = e.path().to_string();
    // serde would take a struct from an array too: a top-level array is
    // simply not the object the request is.
    if path.is_empty() || path == "." || path.starts_with('[') {
        format!("request body: {what} (line {line}, column {column})")
    } else {
        format!("{path}: {what} (line {line}, column {column})")
    }
}

fn image(field: &str, img: Option<Image>, bucket: Option<&str>) -> Result<ImageInput, AwsError> {
    let Some(img) = img else {
        return Err(AwsError::invalid_parameter(format!("{field}: missing")));
    };
    match (img.bytes, img.s3_object) {
        (Some(b64), None) => {
            // Refused before decoding: base64 is 4/3 of the bytes.
            if b64.len() / 4 * 3 > MAX_AWS_IMAGE_BYTES + 3 {
                return Err(AwsError::image_too_large(format!(
                    "{field}.Bytes: larger than the 5 MB limit"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    AwsError::invalid_parameter(format!("{field}.Bytes: not valid base64 ({e})"))
                })?;
            if bytes.len() > MAX_AWS_IMAGE_BYTES {
                return Err(AwsError::image_too_large(format!(
                    "{field}.Bytes: larger than the 5 MB limit"
                )));
            }
            if bytes.is_empty() {
                return Err(AwsError::invalid_parameter(format!("{field}.Bytes: empty")));
            }
            match image_format::sniff(&bytes) {
                Some(f) if f.is_supported() => Ok(ImageInput::Bytes(Bytes::from(bytes))),
                Some(f) => Err(AwsError::invalid_image_format(format!(
                    "{field}: {} images are not supported; send JPEG, PNG or WebP",
                    f.name()
                ))),
                None => Err(AwsError::invalid_image_format(format!(
                    "{field}: not a JPEG, PNG or WebP image"
                ))),
            }
        }
        (None, Some(obj)) => {
            if obj.version.is_some() {
                return Err(AwsError::invalid_parameter(format!(
                    "{field}.S3Object.Version: object versions are not supported"
                )));
            }
            let (Some(b), Some(name)) = (obj.bucket, obj.name) else {
                return Err(AwsError::invalid_parameter(format!(
                    "{field}.S3Object: Bucket and Name are required"
                )));
            };
            if bucket.is_none() {
                return Err(AwsError::new(
                    super::errors::INVALID_S3_OBJECT,
                    format!("{field}.S3Object: this server has no S3 bucket configured"),
                ));
            }
            // The inputs layer checks the bucket and the organisation's prefix.
            Ok(ImageInput::S3(format!("s3://{b}/{name}")))
        }
        _ => Err(AwsError::invalid_parameter(format!(
            "{field}: send exactly one of Bytes and S3Object"
        ))),
    }
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct BoundingBox {
    pub width: f32,
    pub height: f32,
    pub left: f32,
    pub top: f32,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Landmark {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub x: f32,
    pub y: f32,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageQuality {
    pub brightness: f32,
    pub sharpness: f32,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Pose {
    pub roll: f32,
    pub yaw: f32,
    pub pitch: f32,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ComparedFace {
    pub bounding_box: BoundingBox,
    pub confidence: f32,
    pub landmarks: Vec<Landmark>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pose: Option<Pose>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<ImageQuality>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SourceImageFace {
    pub bounding_box: BoundingBox,
    pub confidence: f32,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FaceMatch {
    pub similarity: f64,
    pub face: ComparedFace,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CompareFacesResponse {
    pub source_image_face: SourceImageFace,
    pub face_matches: Vec<FaceMatch>,
    pub unmatched_faces: Vec<ComparedFace>,
}

fn bounding_box(f: &FaceReport) -> BoundingBox {
    BoundingBox {
        width: f.width,
        height: f.height,
        left: f.left,
        top: f.top,
    }
}

/// Only the landmarks our detector really finds and Rekognition has a type
/// for: the eyes (`eyeLeft` is the one on the image's left, as in
/// Rekognition's output) and the nose tip. The mouth centre and the ears
/// have no Rekognition type.
fn landmarks(f: &FaceReport) -> Vec<Landmark> {
    [("eyeLeft", 0), ("eyeRight", 1), ("nose", 2)]
        .into_iter()
        .map(|(kind, i)| Landmark {
            kind,
            x: f.landmarks[i][0],
            y: f.landmarks[i][1],
        })
        .collect()
}

fn compared(f: &FaceReport) -> ComparedFace {
    let round = |v: f32| (v * 100.0).round() / 100.0;
    ComparedFace {
        bounding_box: bounding_box(f),
        confidence: f.score * 100.0,
        landmarks: landmarks(f),
        pose: f.quality.map(|q| Pose {
            roll: round(q.pose.roll),
            yaw: round(q.pose.yaw),
            pitch: round(q.pose.pitch),
        }),
        quality: f.quality.map(|q| ImageQuality {
            brightness: round(q.brightness),
            sharpness: round(q.sharpness),
        }),
    }
}

/// The response: None when the source image has no face that passes the filter.
pub fn response(
    c: &Comparison,
    threshold: f64,
    quality: QualityFilter,
) -> Option<CompareFacesResponse> {
    let source = first_face(&c.source).filter(|f| quality.admits(f))?;
    let mut face_matches = Vec::new();
    let mut unmatched_faces = Vec::new();
    // Target faces are largest first, as Rekognition lists them.
    for (f, similarity) in c.target.faces.iter().zip(&c.target_confidences) {
        if !quality.admits(f) {
            continue;
        }
        let similarity = if similarity.is_finite() {
            similarity.clamp(0.0, 100.0)
        } else {
            0.0
        };
        if similarity >= threshold {
            face_matches.push(FaceMatch {
                similarity,
                face: compared(f),
            });
        } else {
            unmatched_faces.push(compared(f));
        }
    }
    Some(CompareFacesResponse {
        source_image_face: SourceImageFace {
            bounding_box: bounding_box(source),
            confidence: source.score * 100.0,
        },
        face_matches,
        unmatched_faces,
    })
}

fn first_face(r: &ImageReport) -> Option<&FaceReport> {
    r.faces.first()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A face, sharp or not: the quality filter reads the measures.
    fn face(sharpness: f32, left: f32) -> FaceReport {
        FaceReport {
            left,
            top: 0.1,
            width: 0.2,
            height: 0.3,
            score: 0.9,
            landmarks: [
                [0.3, 0.2],
                [0.4, 0.2],
                [0.35, 0.3],
                [0.35, 0.4],
                [0.2, 0.25],
                [0.5, 0.25],
            ],
            age: Some(30.0),
            quality: Some(crate::faces::quality::Quality {
                brightness: 55.0,
                sharpness,
                size: 240.0,
                pose: crate::faces::quality::Pose {
                    roll: -3.25,
                    yaw: 12.5,
                    pitch: -4.0,
                },
            }),
        }
    }

    fn comparison() -> Comparison {
        Comparison {
            confidence: 97.5,
            cosine: Some(0.7),
            source_face_detected: true,
            target_face_detected: true,
            map: None,
            ages: (None, None),
            age_pass: crate::faces::age_pass::AgePass::NotNeeded,
            target_face: Some(0),
            source: ImageReport {
                width: 100,
                height: 100,
                faces: vec![face(70.0, 0.1)],
            },
            target: ImageReport {
                width: 100,
                height: 100,
                faces: vec![face(70.0, 0.1), face(10.0, 0.5), face(18.0, 0.7)],
            },
            target_confidences: vec![97.5, 91.0, 12.25],
            timings: Default::default(),
        }
    }

    #[test]
    fn splits_target_faces_on_the_threshold_and_filters_by_quality() {
        let r = response(&comparison(), 80.0, QualityFilter::None).unwrap();
        assert_eq!(r.face_matches.len(), 2);
        assert_eq!(r.face_matches[0].similarity, 97.5);
        assert_eq!(r.unmatched_faces.len(), 1);
        let r = response(&comparison(), 95.0, QualityFilter::Medium).unwrap();
        // The blurred face is dropped by the filter, not listed as unmatched.
        assert_eq!((r.face_matches.len(), r.unmatched_faces.len()), (1, 1));
        // HIGH also drops the softer one (sharpness 18: MEDIUM's 12 passes, HIGH's 22 not).
        let high = response(&comparison(), 95.0, QualityFilter::High).unwrap();
        assert_eq!(
            (high.face_matches.len(), high.unmatched_faces.len()),
            (1, 0)
        );
        // Through the wire text: f32 fields print as their shortest form (0.1).
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(json["SourceImageFace"]["BoundingBox"]["Left"], 0.1);
        assert_eq!(
            json["FaceMatches"][0]["Face"]["Landmarks"][0]["Type"],
            "eyeLeft"
        );
        let matched = &json["FaceMatches"][0]["Face"];
        assert_eq!(
            matched["Pose"],
            serde_json::json!({"Roll": -3.25, "Yaw": 12.5, "Pitch": -4.0})
        );
        assert_eq!(
            matched["Quality"],
            serde_json::json!({"Brightness": 55.0, "Sharpness": 70.0})
        );
        // Rekognition's ComparedSourceImageFace has only a box and a confidence.
        assert!(json["SourceImageFace"].get("Quality").is_none());
        let mut no_face = comparison();
        no_face.source.faces.clear();
        assert!(response(&no_face, 80.0, QualityFilter::None).is_none());
        // A blurred source is no source face at MEDIUM, but is one at LOW.
        let mut blurred = comparison();
        blurred.source.faces = vec![face(10.0, 0.1)];
        assert!(response(&blurred, 80.0, QualityFilter::Medium).is_none());
        assert!(response(&blurred, 80.0, QualityFilter::Low).is_some());
    }

    #[test]
    fn parses_requests_and_refuses_bad_ones() {
        let jpeg = base64::engine::general_purpose::STANDARD.encode(b"\xFF\xD8\xFF\xE0rest");
        let body = format!(
            r#"{{"SourceImage":{{"Bytes":"{jpeg}"}},"TargetImage":{{"S3Object":{{"Bucket":"b","Name":"orgs/a/x.jpg"}}}},"QualityFilter":"AUTO"}}"#
        );
        let p = parse(body.as_bytes(), Some("b")).unwrap();
        assert_eq!(p.threshold, 80.0);
        assert_eq!(p.quality, QualityFilter::Medium);
        assert_eq!(p.target, ImageInput::S3("s3://b/orgs/a/x.jpg".into()));
        assert_eq!(
            parse(body.as_bytes(), None).unwrap_err().kind,
            "InvalidS3ObjectException"
        );
        let e = parse(br#"{"TargetImage":{}}"#, None).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            ("InvalidParameterException", "SourceImage: missing")
        );
        assert_eq!(
            parse(b"{", None).unwrap_err().kind,
            "SerializationException"
        );
        // The field is named in the request's terms, never by our Rust types.
        for (body, field, expected) in [
            (
                r#"{"SourceImage":{"S3Object":"x"}}"#,
                "SourceImage.S3Object",
                "expected an object",
            ),
            (
                r#"{"SimilarityThreshold":"high"}"#,
                "SimilarityThreshold",
                "expected a number",
            ),
            (
                r#"{"SourceImage":{"Bytes":5}}"#,
                "SourceImage.Bytes",
                "expected a string",
            ),
            (r#"[1]"#, "request body", "expected an object"),
            (r#"{"SourceImage":"#, "", "the JSON ends early"),
        ] {
            let e = parse(body.as_bytes(), None).unwrap_err();
            assert_eq!(e.kind, "SerializationException");
            assert!(e.message.starts_with(field), "{body}: {}", e.message);
            assert!(e.message.contains(expected), "{body}: {}", e.message);
            for internal in [
                "struct",
                "f64",
                "Option",
                "CompareFacesRequest",
                "S3Object ",
            ] {
                assert!(!e.message.contains(internal), "{body}: {}", e.message);
            }
        }
        let gif = base64::engine::general_purpose::STANDARD.encode(b"GIF89a....");
        let body =
            format!(r#"{{"SourceImage":{{"Bytes":"{gif}"}},"TargetImage":{{"Bytes":"{gif}"}}}}"#);
        assert_eq!(
            parse(body.as_bytes(), None).unwrap_err().kind,
            "InvalidImageFormatException"
        );
        let big = "A".repeat(MAX_AWS_IMAGE_BYTES / 3 * 4 + 8);
        let body =
            format!(r#"{{"SourceImage":{{"Bytes":"{big}"}},"TargetImage":{{"Bytes":"{big}"}}}}"#);
        assert_eq!(
            parse(body.as_bytes(), None).unwrap_err().kind,
            "ImageTooLargeException"
        );
        let body = br#"{"SourceImage":{"Bytes":"AA=="},"TargetImage":{"Bytes":"AA=="},"SimilarityThreshold":101}"#;
        assert_eq!(
            parse(body, None).unwrap_err().kind,
            "InvalidParameterException"
        );
    }
}
