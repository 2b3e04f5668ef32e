//! Function names for every distinct site, in batches: one symbolizer call per file and one for
//! the kernel.

use std::{collections::HashMap, sync::Arc};

use super::sites::Site;
use crate::{
    process::{FileId, MappedFile},
    symbolize::{Frames, Symbolizer},
};

/// Names every distinct site: one symbolizer call per file and one for the kernel.
pub(super) fn symbolize(
    stacks: &[Vec<Site>],
    files: &HashMap<FileId, Arc<MappedFile>>,
    symbolizer: &mut Symbolizer,
) -> HashMap<Site, Frames> {
    let mut by_file: HashMap<FileId, Vec<u64>> = HashMap::new();
    let mut kernel = Vec::new();
    for site in stacks.iter().flatten() {
        match *site {
            Site::Kernel(address) => kernel.push(address),
            Site::File(id, offset) => by_file.entry(id).or_default().push(offset),
            Site::Other(..) | Site::Truncated | Site::Unstacked => {}
        }
    }
    let mut names = HashMap::new();
    for (id, mut offsets) in by_file {
        offsets.sort_unstable();
        offsets.dedup();
        let frames = symbolizer.user(&files[&id], &offsets);
        names.extend(offsets.into_iter().map(|o| Site::File(id, o)).zip(frames));
    }
    kernel.sort_unstable();
    kernel.dedup();
    let frames = symbolizer.kernel(&kernel);
    names.extend(kernel.into_iter().map(Site::Kernel).zip(frames));
    names
}
