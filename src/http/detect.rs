//! `POST /v1/face/detect`: the face boxes of ONE image, for the try page's
//! outlines (and any client that wants to show where the faces are).
//!
//! Authenticated and counted by the organisation's rate limit like a compare,
//! but never charged: it reveals no identity decision (boxes, detector
//! scores and the capture's quality only, no similarity, no embedding, no age). Bounded like a compare:
//! body size, the shared body budget, the request deadline, and the inference
//! queue, as the organisation's work: served in turn with its compares and
//! other organisations', within its share of the queue (a full queue or share
//! is 503 `overloaded`).
//!
//! Order: auth → rate limit → body (one field `image`, see
//! [`crate::inputs::single`]) → engine → response. A client that goes away
//! drops this future, and with it its queued image.
use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tokio::time::timeout_at;

use super::{AppState, error::ApiError, exchange};
use crate::{
    accounts::Org,
    faces::{
        FacesError, Side,
        quality::{self, Problem},
        report::ImageReport,
    },
    inputs::single::{IMAGE_FIELD, MAX_SINGLE_BODY_BYTES, read_image_body},
};

/// The 200 body.
#[derive(Debug, Serialize)]
pub struct DetectResponse {
    /// Upright size of the image in pixels (EXIF orientation applied).
    pub width: u32,
    pub height: u32,
    /// Largest first: `faces[0]` is the face a compare uses as its source.
    pub faces: Vec<FaceBox>,
}

/// One face: a box as ratios (0–1) of the upright image, the detector
/// score, the capture's quality and what keeps it from [`quality::HIGH`].
#[derive(Debug, Serialize)]
pub struct FaceBox {
    pub left: f32,
    pub top: f32,
    pub width: f32,
    pub height: f32,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<FaceQuality>,
    /// Empty for a face fit for an identity check; else why to retake it.
    pub problems: Vec<Problem>,
}

/// docs/quality.md: brightness and sharpness 0–100, size in original pixels,
/// pose in degrees.
#[derive(Debug, Serialize)]
pub struct FaceQuality {
    pub brightness: f32,
    pub sharpness: f32,
    pub size: f32,
    pub roll: f32,
    pub yaw: f32,
    pub pitch: f32,
}

impl From<ImageReport> for DetectResponse {
    /// Boxes and quality: landmarks and ages stay inside.
    fn from(r: ImageReport) -> Self {
        let round = |v: f32| (v * 10_000.0).round() / 10_000.0;
        let tenth = |v: f32| (v * 10.0).round() / 10.0;
        DetectResponse {
            width: r.width,
            height: r.height,
            faces: r
                .faces
                .into_iter()
                .map(|f| FaceBox {
                    left: round(f.left),
                    top: round(f.top),
                    width: round(f.width),
                    height: round(f.height),
                    score: round(f.score),
                    problems: f
                        .quality
                        .map(|q| q.problems(&quality::HIGH))
                        .unwrap_or_default(),
                    quality: f.quality.map(|q| FaceQuality {
                        brightness: tenth(q.brightness),
                        sharpness: tenth(q.sharpness),
                        size: q.size.round(),
                        roll: tenth(q.pose.roll),
                        yaw: tenth(q.pose.yaw),
                        pitch: tenth(q.pose.pitch),
                    }),
                })
                .collect(),
        }
    }
}

pub async fn detect(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let work = async |org: &Org, headers: &http::HeaderMap, body: &mut Option<Body>| {
        process(&state, org, headers, body).await
    };
    exchange::with_api_key(&state, req, work).await
}

async fn process(
    state: &AppState,
    org: &Org,
    headers: &http::HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let admitted = exchange::admit_body(state, &org.id, headers, body, MAX_SINGLE_BODY_BYTES)?;
    // Held until the answer: the image lives as long as the request does.
    let _body_share = admitted.share;
    let bytes = timeout_at(deadline, read_image_body(admitted.kind, admitted.body))
        .await
        .map_err(|_| ApiError::timed_out())??;
    let report = timeout_at(deadline, state.engine.faces(&org.id, Side::Source, bytes))
        .await
        .map_err(|_| ApiError::timed_out())?
        .map_err(image_error)?;
    let body = serde_json::to_string(&DetectResponse::from(report)).map_err(ApiError::internal)?;
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// The engine's errors, with the bad image named by this endpoint's field.
fn image_error(e: FacesError) -> ApiError {
    match e {
        FacesError::BadImage {
            side,
            kind,
            message,
        } => ApiError::bad_image(IMAGE_FIELD, side.field(), kind, &message),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faces::report::FaceReport;

    #[test]
    fn the_response_carries_boxes_scores_and_quality_only() {
        let r = ImageReport {
            width: 640,
            height: 480,
            faces: vec![FaceReport {
                left: 0.123_456,
                top: 0.2,
                width: 0.3,
                height: 0.4,
                score: 0.987_654,
                landmarks: [[0.5, 0.5]; 6],
                age: Some(31.0),
                quality: Some(quality::Quality {
                    brightness: 12.345,
                    sharpness: 60.0,
                    size: 191.6,
                    pose: quality::Pose {
                        roll: -2.04,
                        yaw: 41.26,
                        pitch: 3.0,
                    },
                }),
            }],
        };
        assert_eq!(
            serde_json::to_string(&DetectResponse::from(r)).unwrap(),
            r#"{"width":640,"height":480,"faces":[{"left":0.1235,"top":0.2,"width":0.3,"height":0.4,"score":0.9877,"quality":{"brightness":12.3,"sharpness":60.0,"size":192.0,"roll":-2.0,"yaw":41.3,"pitch":3.0},"problems":["too_dark","turned"]}]}"#
        );
    }

    #[test]
    fn openapi_describes_the_endpoint_as_served() {
        let v: serde_json::Value =
            serde_json::from_str(super::super::health_metrics::OPENAPI_JSON).unwrap();
        let op = &v["paths"]["/v1/face/detect"]["post"];
        for status in ["200", "400", "401", "429", "500", "503"] {
            assert!(op["responses"][status].is_object(), "{status} undocumented");
        }
        assert!(op["responses"]["402"].is_null(), "detect is never charged");
        let schemas = &v["components"]["schemas"];
        let fields = |name: &str| -> Vec<String> {
            let mut k: Vec<String> = schemas[name]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            k
        };
        assert_eq!(fields("DetectResponse"), ["faces", "height", "width"]);
        assert_eq!(
            fields("FaceBox"),
            [
                "height", "left", "problems", "quality", "score", "top", "width"
            ]
        );
        assert_eq!(
            fields("FaceQuality"),
            ["brightness", "pitch", "roll", "sharpness", "size", "yaw"]
        );
        for page in ["/try", "/"] {
            assert!(v["paths"][page]["get"].is_object(), "{page}");
        }
    }

    #[test]
    fn bad_images_are_named_by_the_image_field() {
        for message in ["source: not a JPEG", "not a JPEG"] {
            let e = image_error(FacesError::BadImage {
                side: Side::Source,
                kind: crate::error_codes::IMAGE_DECODE_FAILED,
                message: message.into(),
            });
            assert_eq!(e.message, "image: not a JPEG");
            assert_eq!(e.code, "image_decode_failed");
        }
    }
}
