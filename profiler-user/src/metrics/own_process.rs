//! The profiler's own CPU time and memory, read at each scrape under the names every Prometheus
//! dashboard already knows (`process_*`). prometheus-client has no process collector.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use crate::adaptive::signals::process_cpu_seconds;

#[derive(Debug)]
pub(super) struct OwnProcess;

impl Collector for OwnProcess {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(seconds) = process_cpu_seconds() {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time of the profiler's threads",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let Ok(status) = procfs::process::Process::myself().and_then(|p| p.status()) else {
            return Ok(());
        };
        for (name, help, kib) in [
            (
                "process_resident_memory",
                "Resident memory of the profiler",
                status.vmrss,
            ),
            (
                "process_max_resident_memory",
                "Peak resident memory of the profiler since start",
                status.vmhwm,
            ),
        ] {
            let Some(kib) = kib else { continue };
            let gauge = ConstGauge::new((kib * 1024) as i64);
            let metric =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
