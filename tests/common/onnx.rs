//! Tiny ONNX graphs written byte by byte (protobuf by hand, no Python): the
//! malformed embedders `pack import` must refuse.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn int(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, (field as u64) << 3);
    varint(out, v);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, ((field as u64) << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A dimension: a number, or a symbol for a free axis.
pub enum Dim {
    N(u64),
    Sym(&'static str),
}

/// ValueInfoProto of a float tensor.
fn value_info(name: &str, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::N(n) => int(&mut dim, 1, *n),
            Dim::Sym(s) => bytes(&mut dim, 2, s.as_bytes()),
        }
        bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    int(&mut tensor, 1, 1); // FLOAT
    bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    bytes(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    bytes(&mut vi, 1, name.as_bytes());
    bytes(&mut vi, 2, &ty);
    vi
}

/// A graph: `nodes` are (op, inputs, output); `scalars` are float initializers.
pub fn model(
    input: &[Dim],
    nodes: &[(&str, &[&str], &str)],
    scalars: &[(&str, f32)],
    output: &[Dim],
) -> Vec<u8> {
    let mut graph = Vec::new();
    for (i, (op, ins, out)) in nodes.iter().enumerate() {
        let mut node = Vec::new();
        for x in *ins {
            bytes(&mut node, 1, x.as_bytes());
        }
        bytes(&mut node, 2, out.as_bytes());
        bytes(&mut node, 3, format!("n{i}").as_bytes());
        bytes(&mut node, 4, op.as_bytes());
        bytes(&mut graph, 1, &node);
    }
    bytes(&mut graph, 2, b"g");
    for (name, v) in scalars {
        let mut t = Vec::new();
        int(&mut t, 2, 1); // FLOAT, a scalar (no dims)
        bytes(&mut t, 4, &v.to_le_bytes()); // packed float_data
        bytes(&mut t, 8, name.as_bytes());
        bytes(&mut graph, 5, &t);
    }
    bytes(&mut graph, 11, &value_info("x", input));
    let last = nodes.last().map(|n| n.2).unwrap_or("x");
    bytes(&mut graph, 12, &value_info(last, output));
    let mut m = Vec::new();
    int(&mut m, 1, 8); // IR version
    bytes(&mut m, 2, b"facecompare-tests");
    bytes(&mut m, 7, &graph);
    let mut opset = Vec::new();
    int(&mut opset, 2, 13);
    bytes(&mut m, 8, &opset);
    m
}

/// `[N, 3, 112, 112]` → the mean colour, `[N, 3]`, then `tail` nodes on it.
pub fn on_mean_colour(tail: &[(&str, &[&str], &str)], scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut nodes: Vec<(&str, &[&str], &str)> = vec![
        ("GlobalAveragePool", &["x"], "pooled"),
        ("Flatten", &["pooled"], "colour"),
    ];
    nodes.extend_from_slice(tail);
    model(
        &image_input(3),
        &nodes,
        scalars,
        &[Dim::Sym("N"), Dim::Sym("D")],
    )
}

pub fn image_input(channels: u64) -> [Dim; 4] {
    [Dim::Sym("N"), Dim::N(channels), Dim::N(112), Dim::N(112)]
}
