//! 5. Output: time and bytes to build and write one interval's pprof, for 1k, 10k and 100k
//!    unique stacks, through the profiler's own profile builder and writer.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use profiler::{
    process::FileId,
    profile::{IntervalMeta, ProfileWriter, build_profile},
    resolve::{
        Labels, MappingInfo, MappingKey, ResolvedLocation, ResolvedSample, SampleKind, TraceLabels,
    },
    symbolize::Frame,
};

use super::{Bench, PartResult};
use crate::{
    report::{Section, Table},
    stats::Summary,
};

/// Shape of the synthetic interval: a busy node's.
const FILES: u64 = 60;
const FUNCTIONS_PER_FILE: u64 = 400;
const PROCESSES: u32 = 300;
const CALL_SITES: u64 = 4;
const MIN_DEPTH: usize = 8;
const MAX_DEPTH: usize = 64;
/// One sample in ten carries a trace context.
const TRACED_EVERY: usize = 10;

pub fn run(bench: &Bench) -> Result<PartResult> {
    let plan = &bench.plan;
    let dir = bench.scratch("output");
    std::fs::create_dir_all(&dir)?;
    let writer = ProfileWriter::new(&dir);
    let mut table = Table::new(&[
        "Unique stacks",
        "Build + write, ms",
        "File size, KiB",
        "Bytes per stack",
        "Stacks per second",
    ]);
    for &stacks in &plan.output_stacks {
        let samples = synthetic_interval(stacks);
        let mut times = Vec::new();
        let mut bytes = 0;
        for round in 0..plan.rounds {
            bench.progress(&format!("output: {stacks} stacks, round {}", round + 1));
            let start = Instant::now();
            let (profile, stats) = build_profile(&samples, meta());
            let (_, written) = writer.write_named("interval.pb.gz", &profile)?;
            times.push(start.elapsed().as_secs_f64());
            anyhow::ensure!(
                stats.stacks == stacks,
                "built {} stacks of {stacks}",
                stats.stacks
            );
            bytes = written;
        }
        let ms = Summary::of(&times).map(|s| s.scaled(1e3));
        let per_second = Summary::of(&times.iter().map(|t| stacks as f64 / t).collect::<Vec<_>>());
        table.row(vec![
            stacks.to_string(),
            ms.map_or("n/a".into(), |s| s.show(1, "").to_string()),
            format!("{:.0}", bytes as f64 / 1024.0),
            format!("{:.1}", bytes as f64 / stacks as f64),
            per_second.map_or("n/a".into(), |s| format!("{:.0}", s.median)),
        ]);
    }
    let section = Section {
        title: "Output".into(),
        method: format!(
            "One interval's profile built from already symbolized samples (the profiler's \
             `build_profile`) and written gzip-compressed and atomically (`ProfileWriter`), for \
             synthetic intervals shaped like a busy node's: stacks {MIN_DEPTH} to {MAX_DEPTH} \
             frames deep over {} functions in {FILES} files, {PROCESSES} processes, one sample \
             in {TRACED_EVERY} with trace labels. The file size does not vary between rounds.",
            FILES * FUNCTIONS_PER_FILE
        ),
        commands: vec!["profiler-bench --only output".into()],
        table,
        notes: vec![],
    };
    Ok(PartResult {
        section,
        targets: vec![],
    })
}

fn meta() -> IntervalMeta {
    IntervalMeta {
        start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        duration: Duration::from_secs(10),
        period_ns: 1_000_000_000 / 19,
    }
}

/// `stacks` distinct samples (distinct call stacks), reproducible.
pub fn synthetic_interval(stacks: usize) -> Vec<ResolvedSample> {
    let mut rng = fastrand::Rng::with_seed(7);
    let infos: Vec<Arc<MappingInfo>> = (0..FILES)
        .map(|f| {
            Arc::new(MappingInfo {
                filename: format!("/usr/lib/service-{f}/libservice{f}.so"),
                build_id: Some(format!("{f:040x}")),
            })
        })
        .collect();
    // A caller frame is one of a few call sites of its function; a leaf is anywhere in it.
    let location = |rng: &mut fastrand::Rng, leaf: bool| {
        let file = rng.u64(..FILES);
        let function = rng.u64(..FUNCTIONS_PER_FILE);
        let spot = if leaf {
            rng.u64(..0x40)
        } else {
            rng.u64(..CALL_SITES) * 0x10
        };
        let name = format!("service{file}::module{}::function{function}", function % 17);
        ResolvedLocation {
            mapping: MappingKey::File(FileId {
                dev: 8,
                inode: 1_000 + file,
            }),
            info: infos[file as usize].clone(),
            address: 0x1000 + function * 0x40 + spot,
            frames: Arc::from([Frame {
                function: name.into(),
                file: Some(format!("src/module{}.rs", function % 17).into()),
                line: Some(1 + (function as u32 * 7) % 900),
            }]),
        }
    };
    // A shared trunk per process makes stacks share prefixes, as real ones do.
    let trunks: Vec<Vec<ResolvedLocation>> = (0..PROCESSES)
        .map(|_| {
            (0..MIN_DEPTH / 2)
                .map(|_| location(&mut rng, false))
                .collect()
        })
        .collect();
    (0..stacks)
        .map(|i| {
            let pid = 1_000 + (i as u32 % PROCESSES);
            let depth = rng.usize(MIN_DEPTH..=MAX_DEPTH);
            let mut locations: Vec<ResolvedLocation> = (0..depth - MIN_DEPTH / 2)
                .map(|level| location(&mut rng, level == 0))
                .collect();
            locations.extend(trunks[(pid - 1_000) as usize].iter().cloned());
            let trace = (i % TRACED_EVERY == 0).then(|| {
                Arc::new(TraceLabels {
                    trace_id: format!("{:032x}", rng.u128(..)),
                    span_id: format!("{:016x}", rng.u64(..)),
                    service_name: Some(format!("service{}", pid % 20)),
                    attributes: vec![],
                })
            });
            ResolvedSample {
                locations: locations.into(),
                labels: Labels {
                    pid,
                    thread_id: pid + (i as u32 % 8),
                    comm: format!("service{}", pid % 20),
                    thread_name: format!("worker-{}", i % 8),
                    trace,
                    container: None,
                },
                kind: SampleKind::Cpu,
                count: 1 + rng.u64(..20),
                nanos: 52_631_578,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_stacks_are_distinct_and_reproducible() {
        let a = synthetic_interval(500);
        let b = synthetic_interval(500);
        assert_eq!(a.len(), 500);
        let (profile, stats) = build_profile(&a, meta());
        assert_eq!(stats.stacks, 500, "every synthetic stack is unique");
        assert_eq!(profile.sample.len(), 500);
        let first =
            |s: &[ResolvedSample]| s[0].locations.iter().map(|l| l.address).collect::<Vec<_>>();
        assert_eq!(first(&a), first(&b));
    }
}
