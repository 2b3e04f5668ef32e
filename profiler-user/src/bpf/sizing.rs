//! How large the BPF maps are made: from the CPU count, the highest rate a recording may use and
//! its interval, so that a 64-CPU node at the capture rate does not drop samples for lack of
//! room, while a small host does not reserve what it never fills. Each can be set by flag.

use profiler_common::maps;

/// What the sizes are derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub cpus: u32,
    /// The highest sampling rate the recording may use (a capture's, if adaptive).
    pub highest_hz: u64,
    pub interval_secs: u64,
}

/// Entries of each map (per half where the map has two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    pub counts: u32,
    /// Entries of the short, medium and long stack maps.
    pub stacks: [u32; 3],
    pub processes: u32,
    /// Bytes of the process-event ring buffer: a power of two, at least a page.
    pub events_bytes: u32,
    /// The off-CPU maps, with `--off-cpu`.
    pub off_cpu: Option<OffCpuSizes>,
}

/// Entries of the off-CPU maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuSizes {
    /// Distinct off-CPU records per interval and half.
    pub counts: u32,
    /// Threads whose waits are timed at once.
    pub threads: u32,
}

impl OffCpuSizes {
    /// Room for twice the threads the host runs now (they come and go; a full map leaves new
    /// threads untimed, counted), and records for a quarter of the samples' room: a record is
    /// one wait of at least `--off-cpu-min-us` or more under one key, and a thread's waits
    /// mostly repeat a few stacks.
    pub fn derive(host_threads: u32, counts: u32) -> Self {
        Self {
            counts: (counts / 4).clamp(MIN_OFF_CPU_COUNTS, MAX_COUNTS as u32),
            threads: host_threads
                .saturating_mul(2)
                .clamp(MIN_OFF_CPU_THREADS, MAX_OFF_CPU_THREADS),
        }
    }
}

const MIN_OFF_CPU_COUNTS: u32 = 4_096;
const MIN_OFF_CPU_THREADS: u32 = 4_096;
/// About 38 MiB of kernel memory (a preallocated hash map of 96-byte values, 152 bytes an
/// entry with the kernel's own), for a host of 131,072 threads.
const MAX_OFF_CPU_THREADS: u32 = 262_144;

/// The threads the host runs now, from `/proc/loadavg` (`running/total`); `None` when it
/// cannot be read.
pub fn host_threads() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// Sizes set by flag; `None` keeps the derived one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeOverrides {
    pub counts: Option<u32>,
    pub stacks: Option<u32>,
    pub processes: Option<u32>,
    pub events_kib: Option<u32>,
}

/// Least entries of the counts map: a calm host needs little, but the map must not be tiny.
const MIN_COUNTS: u64 = 4_096;
/// Most entries of the counts map by default (about 60 MiB of kernel memory for both halves).
const MAX_COUNTS: u64 = 262_144;
/// Stacks are stored once per interval and shared by every sample with that stack. Many threads
/// sampled a few times each make nearly one distinct stack per sample (the innermost address
/// varies): 2,000 threads at 999 Hz on 2 CPUs made 30k distinct stacks of 58k samples. Short
/// stacks (128 bytes) get room for half the samples.
const STACKS_PER_SAMPLE_DIVISOR: u64 = 2;
const MIN_STACKS: u64 = 2_048;
const MAX_STACKS: u64 = 131_072;
/// Medium stacks (384 bytes) get half the room of short ones, long ones (1 KiB) an eighth, but
/// never less than the floor: a host whose stacks are all deep (an interpreter, a JVM) keeps the
/// room a single map of 1 KiB stacks had on a small host.
const MEDIUM_STACKS_DIVISOR: u32 = 2;
const LONG_STACKS_DIVISOR: u32 = 8;
const DEFAULT_PROCESSES: u32 = 32_768;
const DEFAULT_EVENTS_BYTES: u32 = 256 * 1024;

impl MapSizes {
    /// Every sample of an interval can make a new counts entry: room for all of them at the
    /// highest rate, with a margin of a quarter for an interval that runs late.
    pub fn derive(load: Load, overrides: SizeOverrides) -> Self {
        let samples = u64::from(load.cpus.max(1)) * load.highest_hz * load.interval_secs.max(1);
        let with_margin = samples + samples / 4;
        let counts = with_margin.clamp(MIN_COUNTS, MAX_COUNTS) as u32;
        let derived =
            (with_margin / STACKS_PER_SAMPLE_DIVISOR).clamp(MIN_STACKS, MAX_STACKS) as u32;
        // The floor of the deeper classes holds for derived sizes only: a flag sets them all.
        let (short, floor) = match overrides.stacks {
            Some(short) => (short, 1),
            None => (derived, MIN_STACKS as u32),
        };
        let stacks = [
            short,
            (short / MEDIUM_STACKS_DIVISOR).max(floor),
            (short / LONG_STACKS_DIVISOR).max(floor),
        ];
        let events_bytes = overrides.events_kib.map_or(DEFAULT_EVENTS_BYTES, |kib| {
            ring_size(kib.saturating_mul(1024))
        });
        Self {
            counts: overrides.counts.unwrap_or(counts),
            stacks,
            processes: overrides.processes.unwrap_or(DEFAULT_PROCESSES),
            events_bytes,
            off_cpu: None,
        }
    }

    /// `(map name, max entries)` for the loader.
    pub fn entries(&self) -> Vec<(&'static str, u32)> {
        let mut entries = Vec::new();
        for half in 0..2 {
            entries.push((maps::COUNTS[half], self.counts));
            let [short, medium, long] = self.stacks;
            entries.push((maps::SHORT_STACKS[half], short));
            entries.push((maps::MEDIUM_STACKS[half], medium));
            entries.push((maps::LONG_STACKS[half], long));
        }
        entries.push((maps::PROCESSES, self.processes));
        entries.push((maps::EVENTS, self.events_bytes));
        // Without off-CPU recording, the smallest maps the programs can refer to, and one
        // slot of each per-CPU scratch map (the off-CPU programs use the second).
        let off_cpu = self.off_cpu.unwrap_or(OffCpuSizes {
            counts: 1,
            threads: 1,
        });
        for half in 0..2 {
            entries.push((maps::OFF_CPU_COUNTS[half], off_cpu.counts));
            // Up to three names (two stacks and a context) per record, mostly shared.
            entries.push((maps::OFF_CPU_PARKED[half], off_cpu.counts));
        }
        entries.push((maps::OFF_CPU_THREADS, off_cpu.threads));
        let slots = if self.off_cpu.is_some() { 2 } else { 1 };
        for name in maps::PER_CPU_SCRATCH {
            entries.push((name, slots));
        }
        entries
    }
}

/// A ring buffer's size must be a power of two and a multiple of the page size.
fn ring_size(bytes: u32) -> u32 {
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    bytes
        .max(page)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_cpu_maps_follow_the_host_threads_and_only_exist_when_asked() {
        let load = Load {
            cpus: 64,
            highest_hz: 99,
            interval_secs: 10,
        };
        let mut sizes = MapSizes::derive(load, SizeOverrides::default());
        let entry = |sizes: &MapSizes, name: &str| {
            sizes
                .entries()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, e)| e)
        };
        assert_eq!(entry(&sizes, maps::OFF_CPU_THREADS), Some(1));
        assert_eq!(entry(&sizes, maps::OFF_CPU_COUNTS[1]), Some(1));
        assert_eq!(
            entry(&sizes, "SCRATCH"),
            Some(1),
            "one slot: no off-CPU program"
        );

        sizes.off_cpu = Some(OffCpuSizes::derive(30_000, sizes.counts));
        assert_eq!(entry(&sizes, maps::OFF_CPU_THREADS), Some(60_000));
        assert_eq!(
            entry(&sizes, maps::OFF_CPU_COUNTS[0]),
            Some(sizes.counts / 4)
        );
        for name in maps::PER_CPU_SCRATCH {
            assert_eq!(entry(&sizes, name), Some(2), "{name}");
        }
        // A calm host still gets room; a huge one a bounded map.
        assert_eq!(OffCpuSizes::derive(0, 1).threads, 4_096);
        assert_eq!(OffCpuSizes::derive(0, 1).counts, 4_096);
        assert_eq!(OffCpuSizes::derive(u32::MAX, 1).threads, 262_144);
    }

    #[test]
    fn host_threads_come_from_loadavg() {
        assert!(host_threads().is_some_and(|threads| threads > 0));
    }

    #[test]
    fn a_large_node_at_the_capture_rate_has_room_for_every_sample() {
        let sizes = MapSizes::derive(
            Load {
                cpus: 64,
                highest_hz: 99,
                interval_secs: 10,
            },
            SizeOverrides::default(),
        );
        // 63,360 samples an interval, plus a quarter.
        assert_eq!(sizes.counts, 79_200);
        assert_eq!(sizes.stacks, [39_600, 19_800, 4_950]);
    }

    #[test]
    fn a_small_host_keeps_the_floor_and_a_huge_one_the_ceiling() {
        let small = MapSizes::derive(
            Load {
                cpus: 2,
                highest_hz: 19,
                interval_secs: 10,
            },
            SizeOverrides::default(),
        );
        assert_eq!((small.counts, small.stacks), (4_096, [2_048; 3]));
        let huge = MapSizes::derive(
            Load {
                cpus: 512,
                highest_hz: 999,
                interval_secs: 60,
            },
            SizeOverrides::default(),
        );
        assert_eq!(
            (huge.counts, huge.stacks),
            (262_144, [131_072, 65_536, 16_384])
        );
    }

    #[test]
    fn flags_win_and_the_ring_is_a_power_of_two_pages() {
        let sizes = MapSizes::derive(
            Load {
                cpus: 2,
                highest_hz: 99,
                interval_secs: 10,
            },
            SizeOverrides {
                counts: Some(8),
                stacks: Some(4),
                processes: Some(2),
                events_kib: Some(5),
            },
        );
        assert_eq!(
            (sizes.counts, sizes.stacks, sizes.processes),
            (8, [4, 2, 1], 2)
        );
        assert_eq!(sizes.events_bytes, 8192);
        assert_eq!(ring_size(1), 4096);
    }
}
