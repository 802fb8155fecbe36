//! The `.onnx` files of a model-pack `.zip` (InsightFace's `buffalo_l.zip`
//! and the like): enough of the zip format to read stored and deflated
//! members, without another dependency.
use anyhow::{Context, bail, ensure};

const EOCD: u32 = 0x0605_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

fn u16_at(b: &[u8], at: usize) -> anyhow::Result<u16> {
    let s = b.get(at..at + 2).context("truncated zip")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> anyhow::Result<u32> {
    let s = b.get(at..at + 4).context("truncated zip")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// `(member path, contents)` of every member whose name ends in `.onnx`.
pub fn onnx_members(zip: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // The end-of-central-directory record: the last 22 bytes plus a comment of up to 64 KiB.
    let from = zip.len().saturating_sub(22 + 65_535);
    let eocd = (from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(zip, i).ok() == Some(EOCD))
        .context("no end-of-central-directory record: not a zip archive")?;
    let entries = u16_at(zip, eocd + 10)? as usize;
    let mut at = u32_at(zip, eocd + 16)? as usize;
    ensure!(
        at != u32::MAX as usize,
        "a zip64 archive: extract the .onnx file and pass it instead"
    );
    let mut out = Vec::new();
    for _ in 0..entries {
        ensure!(u32_at(zip, at)? == CENTRAL, "corrupt zip central directory");
        let method = u16_at(zip, at + 10)?;
        let packed = u32_at(zip, at + 20)? as usize;
        let size = u32_at(zip, at + 24)? as usize;
        let name_len = u16_at(zip, at + 28)? as usize;
        let extra_len = u16_at(zip, at + 30)? as usize;
        let comment_len = u16_at(zip, at + 32)? as usize;
        let local = u32_at(zip, at + 42)? as usize;
        let name = zip
            .get(at + 46..at + 46 + name_len)
            .context("truncated zip")?;
        let name = String::from_utf8_lossy(name).into_owned();
        at += 46 + name_len + extra_len + comment_len;
        if !name.to_ascii_lowercase().ends_with(".onnx") {
            continue;
        }
        ensure!(
            packed != u32::MAX as usize && size != u32::MAX as usize,
            "{name}: a zip64 member: extract it and pass the .onnx file instead"
        );
        ensure!(
            u32_at(zip, local)? == LOCAL,
            "{name}: corrupt zip local header"
        );
        let start =
            local + 30 + u16_at(zip, local + 26)? as usize + u16_at(zip, local + 28)? as usize;
        let data = zip
            .get(start..start + packed)
            .with_context(|| format!("{name}: truncated zip member"))?;
        let bytes = match method {
            0 => data.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(data, size)
                .map_err(|e| anyhow::anyhow!("{name}: cannot inflate: {e:?}"))?,
            m => bail!("{name}: zip compression method {m} (only stored and deflate are read)"),
        };
        ensure!(bytes.len() == size, "{name}: inflated to the wrong size");
        out.push((name, bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored (uncompressed) zip, as `zip -0` writes it.
    fn stored_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        let (mut out, mut central) = (Vec::new(), Vec::new());
        for (name, data) in members {
            let offset = out.len() as u32;
            let header = |sig: u32, central_dir: bool| {
                let mut h = sig.to_le_bytes().to_vec();
                if central_dir {
                    h.extend(20u16.to_le_bytes()); // version made by
                }
                h.extend(20u16.to_le_bytes()); // version needed
                h.extend([0u8; 4]); // flags, method 0
                h.extend([0u8; 8]); // time, date, crc (not checked)
                h.extend((data.len() as u32).to_le_bytes());
                h.extend((data.len() as u32).to_le_bytes());
                h.extend((name.len() as u16).to_le_bytes());
                h.extend(0u16.to_le_bytes()); // extra
                if central_dir {
                    h.extend([0u8; 6]); // comment length, disk, internal attributes
                    h.extend([0u8; 4]); // external attributes
                    h.extend(offset.to_le_bytes());
                }
                h.extend(name.as_bytes());
                h
            };
            central.extend(header(CENTRAL, true));
            let local = header(LOCAL, false);
            out.extend(local);
            out.extend(*data);
        }
        let cd_at = out.len() as u32;
        let cd_len = central.len() as u32;
        out.extend(central);
        out.extend(EOCD.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((members.len() as u16).to_le_bytes());
        out.extend((members.len() as u16).to_le_bytes());
        out.extend(cd_len.to_le_bytes());
        out.extend(cd_at.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_the_onnx_members_only() {
        let zip = stored_zip(&[
            ("buffalo/readme.txt", b"hello"),
            ("buffalo/w600k.onnx", b"graph-bytes"),
        ]);
        assert!(is_zip(&zip));
        let m = onnx_members(&zip).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, "buffalo/w600k.onnx");
        assert_eq!(m[0].1, b"graph-bytes");
        assert!(onnx_members(b"not a zip at all, just some text").is_err());
    }
}
