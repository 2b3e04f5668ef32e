//! The BTF of a matrix kernel, taken from its image: the unit tests of the profiler's per-kernel
//! feature detection (profiler-user/src/kernel_features.rs) read these files as fixtures.
//!
//! An x86 bzImage carries the kernel as a compressed ELF (`payload_offset`/`payload_length` in
//! its setup header, boot protocol 2.08+); Debian compresses it with LZ4 (5.10, 6.1) or zstd
//! (6.12 on), and the ELF's `.BTF` section is what `/sys/kernel/btf/vmlinux` serves. Written by
//! hand: no crate reads a bzImage's setup header; the decompressors and the ELF reader are crates.

use std::{fs, io::Read, path::Path};

use anyhow::{Context, Result, bail, ensure};
use object::{Object, ObjectSection};

/// A decompressed kernel is 40-80 MiB; more means a malformed image.
const MAX_KERNEL: usize = 512 << 20;
/// The kernel's legacy LZ4 format: 8 MiB of output per block.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Writes the `.BTF` of the kernel in `vmlinuz` to `out`.
pub fn extract(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("cannot read {}", vmlinuz.display()))?;
    let btf = btf_of_image(&image).with_context(|| {
        format!(
            "cannot take the BTF out of {} (a bzImage with an LZ4 or zstd payload)",
            vmlinuz.display()
        )
    })?;
    fs::write(out, btf).with_context(|| format!("cannot write {}", out.display()))
}

fn btf_of_image(image: &[u8]) -> Result<Vec<u8>> {
    let elf = decompress(payload(image)?)?;
    let file = object::File::parse(&*elf).context("the payload is not an ELF file")?;
    let section = file
        .section_by_name(".BTF")
        .context("the kernel has no .BTF section (built without CONFIG_DEBUG_INFO_BTF)")?;
    Ok(section.data().context("cannot read .BTF")?.to_vec())
}

/// The compressed kernel inside a bzImage.
fn payload(image: &[u8]) -> Result<&[u8]> {
    let u32_at = |offset: usize| -> Result<u32> {
        let bytes = image
            .get(offset..offset + 4)
            .context("the image is shorter than its setup header")?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    };
    ensure!(
        image.get(0x202..0x206) == Some(b"HdrS"),
        "not a bzImage (no HdrS setup header)"
    );
    // The protected-mode kernel follows the boot sector and `setup_sects` sectors (0 means 4).
    let setup_sects = match image.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = u32_at(0x248)? as usize;
    let length = u32_at(0x24c)? as usize;
    image
        .get(start + offset..start + offset + length)
        .context("the payload lies outside the image")
}

fn decompress(payload: &[u8]) -> Result<Vec<u8>> {
    if payload.starts_with(&ZSTD_MAGIC) {
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(payload)
            .map_err(|err| anyhow::anyhow!("bad zstd frame: {err}"))?;
        let mut out = Vec::new();
        (&mut decoder)
            .take(MAX_KERNEL as u64 + 1)
            .read_to_end(&mut out)
            .context("cannot decompress the zstd payload")?;
        ensure!(
            out.len() <= MAX_KERNEL,
            "the kernel is over {MAX_KERNEL} bytes"
        );
        Ok(out)
    } else if let Some(mut rest) = payload.strip_prefix(&LZ4_LEGACY_MAGIC) {
        // Blocks of `u32 compressed size` + data; the kernel's build appends the output size,
        // which reads as a block size past the data: the end.
        let mut out = Vec::new();
        while rest.len() > 4 {
            let (size, data) = rest.split_at(4);
            let size = u32::from_le_bytes(size.try_into().expect("4 bytes")) as usize;
            if size == u32::from_le_bytes(LZ4_LEGACY_MAGIC) as usize {
                rest = data;
                continue;
            }
            let Some(block) = data.get(..size) else { break };
            ensure!(
                out.len() < MAX_KERNEL,
                "the kernel is over {MAX_KERNEL} bytes"
            );
            out.extend(
                lz4_flex::block::decompress(block, LZ4_LEGACY_BLOCK).context("bad LZ4 block")?,
            );
            rest = &data[size..];
        }
        Ok(out)
    } else {
        bail!(
            "the payload starts with {:02x?}: neither LZ4 (legacy) nor zstd",
            &payload[..payload.len().min(4)]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_bzimage_is_an_error() {
        let err = btf_of_image(&[0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("not a bzImage"), "{err}");
    }

    #[test]
    fn lz4_legacy_blocks_are_joined() {
        let first = lz4_flex::block::compress(b"first block ");
        let second = lz4_flex::block::compress(b"second block");
        let mut payload = LZ4_LEGACY_MAGIC.to_vec();
        for block in [&first, &second] {
            payload.extend((block.len() as u32).to_le_bytes());
            payload.extend(block);
        }
        // The size the kernel's build appends.
        payload.extend(24u32.to_le_bytes());
        assert_eq!(decompress(&payload).unwrap(), b"first block second block");
    }

    #[test]
    fn an_unknown_compression_is_named() {
        let err = decompress(b"\x1f\x8b\x08\x00rest").unwrap_err();
        assert!(err.to_string().contains("1f, 8b"), "{err}");
    }
}
