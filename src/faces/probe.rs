//! What an embedder graph takes and gives, read from its ONNX metadata and
//! confirmed by one trial run on a batch of two blank crops: the contract
//! `pack import` writes into a manifest, or the reason it refuses the file.
use anyhow::{Context, anyhow, bail, ensure};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::{pack::Layout, runtime};

/// An embedder's input and output as the graph declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    pub input: String,
    pub layout: Layout,
    /// Side of the square input image, in pixels.
    pub size: u32,
    pub output: String,
    pub dim: usize,
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Probes `model` (named `file` in messages). `size` is needed only when the
/// graph leaves the image side open (a dynamic height and width).
pub fn embedder(file: &str, model: &[u8], size: Option<u32>) -> anyhow::Result<Probed> {
    let mut session = runtime::session(model, 1)
        .map_err(|e| anyhow!("{file} is not an ONNX model ONNX Runtime can load: {e:#}"))?;
    let inputs: Vec<(String, ValueType)> = session
        .inputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect();
    let outputs: Vec<(String, ValueType)> = session
        .outputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect();
    let [(input, in_type)] = &inputs[..] else {
        let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        bail!(
            "{file}: the graph takes {} inputs ({names:?}); an embedder takes one 3-channel square image",
            inputs.len()
        );
    };
    let not_an_image = |why: &str| {
        anyhow!(
            "{file}: input {input:?} is not one 3-channel square image ({why}); an embedder takes [N, 3, S, S] (NCHW) or [N, S, S, 3] (NHWC)"
        )
    };
    let ValueType::Tensor { ty, shape, .. } = in_type else {
        return Err(not_an_image("not a tensor"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(not_an_image(&format!("elements are {ty}, not float32")));
    }
    let shape_s = shape_text(shape);
    let (layout, h, w) = match shape[..] {
        [_, 3, h, w] => (Layout::NCHW, h, w),
        [_, h, w, 3] => (Layout::NHWC, h, w),
        [_, _, _, _] => {
            return Err(not_an_image(&format!(
                "shape {shape_s}: no axis of 3 channels"
            )));
        }
        _ => return Err(not_an_image(&format!("shape {shape_s}: not 4 axes"))),
    };
    let size = match (h, w, size) {
        (h, w, given) if h > 0 && h == w => {
            if let Some(g) = given {
                ensure!(
                    g as i64 == h,
                    "{file}: --size {g}, but the graph's input {input:?} is {h}x{h} ({shape_s})"
                );
            }
            h as u32
        }
        (-1, -1, Some(g)) => g,
        (-1, -1, None) => {
            return Err(not_an_image(&format!(
                "shape {shape_s}: its side is left open; pass --size"
            )));
        }
        _ => return Err(not_an_image(&format!("shape {shape_s}: not square"))),
    };
    ensure!(
        (16..=1024).contains(&size),
        "{file}: an image side of {size} px is not a face crop (16 to 1024)"
    );
    let [(output, out_type)] = &outputs[..] else {
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        bail!(
            "{file}: the graph gives {} outputs ({names:?}); an embedder gives one vector per face",
            outputs.len()
        );
    };
    let not_a_vector = |why: String| {
        anyhow!(
            "{file}: output {output:?} is not one vector per face ({why}); an embedder gives [N, D]"
        )
    };
    let declared = match out_type {
        ValueType::Tensor { ty, shape, .. } if *ty == TensorElementType::Float32 => match shape[..]
        {
            [_, d] => (d > 0).then_some(d as usize),
            _ => return Err(not_a_vector(format!("shape {}", shape_text(shape)))),
        },
        ValueType::Tensor { ty, .. } => return Err(not_a_vector(format!("elements are {ty}"))),
        _ => return Err(not_a_vector("not a tensor".into())),
    };
    // Two blank crops: the batch axis must be free (the pipeline embeds all faces of an image at once).
    let s = size as usize;
    let shape = match layout {
        Layout::NCHW => [2, 3, s, s],
        Layout::NHWC => [2, s, s, 3],
    };
    let blank = vec![0f32; 2 * 3 * s * s];
    let tensor = TensorRef::from_array_view((shape, blank.as_slice())).context("trial input")?;
    let run = session
        .run(ort::inputs![input.as_str() => tensor])
        .map_err(|e| anyhow!("{file}: a trial run on two blank {s}x{s} crops failed (the first input axis must take a batch of faces): {e}"))?;
    let (got_shape, values) = run[output.as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| not_a_vector(format!("{e}")))?;
    let got: Vec<i64> = got_shape.iter().copied().collect();
    let [2, d] = got[..] else {
        return Err(not_a_vector(format!(
            "a batch of 2 gave shape {}",
            shape_text(&got)
        )));
    };
    let dim = d as usize;
    ensure!(
        declared.is_none_or(|dd| dd == dim) && dim >= 2 && values.len() == 2 * dim,
        "{file}: output {output:?} declares {declared:?} values per face but gave {dim}"
    );
    Ok(Probed {
        input: input.clone(),
        layout,
        size,
        output: output.clone(),
        dim,
    })
}
