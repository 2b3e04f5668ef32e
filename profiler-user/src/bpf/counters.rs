use aya::maps::{MapData, PerCpuArray};
use profiler_common::{COUNTER_COUNT, Counter};

use super::BpfError;

/// Totals of the BPF program's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub values: [u64; COUNTER_COUNT as usize],
}

impl CounterSnapshot {
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        let mut values = [0; COUNTER_COUNT as usize];
        for (i, value) in values.iter_mut().enumerate() {
            *value = self.values[i].saturating_sub(earlier.values[i]);
        }
        CounterSnapshot { values }
    }

    /// Counters that signal a loss or a failure and are not zero, as `name=value` pairs.
    pub fn problems(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .filter(|c| {
                !matches!(
                    c,
                    Counter::Samples
                        | Counter::Filtered
                        | Counter::Idle
                        | Counter::Traced
                        | Counter::UnwindWalks
                        | Counter::OffCpuWaits
                        | Counter::OffCpuShort
                        | Counter::OffCpuRecords
                        | Counter::OffCpuThreadsAdded
                        | Counter::OffCpuThreadsRemoved
                )
            })
            .map(|c| (c.name(), self.get(*c)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

pub(crate) fn read(map: &PerCpuArray<MapData, u64>) -> Result<CounterSnapshot, BpfError> {
    let mut snapshot = CounterSnapshot::default();
    for counter in Counter::ALL {
        let per_cpu = map
            .get(&(counter as u32), 0)
            .map_err(|source| BpfError::Map {
                name: profiler_common::maps::COUNTERS,
                source,
            })?;
        snapshot.values[counter as usize] = per_cpu.iter().sum();
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_and_problems_skip_normal_counters() {
        let mut earlier = CounterSnapshot::default();
        earlier.values[Counter::Samples as usize] = 10;
        let mut later = earlier;
        later.values[Counter::Samples as usize] = 25;
        later.values[Counter::Filtered as usize] = 3;
        later.values[Counter::StacksMapFull as usize] = 2;
        let delta = later.since(&earlier);
        assert_eq!(delta.get(Counter::Samples), 15);
        assert_eq!(delta.problems(), vec![("stacks_map_full", 2)]);
    }
}
