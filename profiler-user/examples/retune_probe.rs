//! Shows the weight the BPF program gives each sample after the rate changes: spins a thread,
//! records it at several rates and prints the mean period per sample, which must match the rate
//! in force (run as root: `cargo run --release -p profiler-user --example retune_probe`).

use std::time::{Duration, Instant};

use profiler::bpf::{
    Sampler, SamplerOptions,
    sizing::{Load, MapSizes, SizeOverrides},
};

fn main() -> anyhow::Result<()> {
    let spin = std::thread::spawn(|| {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_secs(7) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
    let mut sampler = Sampler::start(&SamplerOptions {
        frequency: 19,
        targets: vec![std::process::id()],
        target_cgroups: Vec::new(),
        cgroup_read: None,
        include_idle: false,
        kernel_stacks: false,
        trace: None,
        task_pt_regs: false,
        unwind: None,
        off_cpu_min_ns: None,
        switch_prev_state: false,
        task: profiler::tracectx::kernel_btf::KernelBtf::read("/sys/kernel/btf/vmlinux")?
            .task_offsets()?,
        sizes: MapSizes::derive(
            Load {
                cpus: 2,
                highest_hz: 99,
                interval_secs: 1,
            },
            SizeOverrides::default(),
        ),
    })?;
    for hz in [19, 99, 7, 99] {
        sampler.set_frequency(hz)?;
        sampler.drain()?;
        std::thread::sleep(Duration::from_secs(1));
        let drained = sampler.drain()?;
        let (count, period) = drained
            .samples
            .iter()
            .fold((0, 0), |(c, p), (_, v)| (c + v.count, p + v.period_ns));
        let mean = period.checked_div(count).unwrap_or(0);
        println!(
            "{hz:>3} Hz: {count:>3} samples, mean period {mean} ns (expected {})",
            1_000_000_000 / hz
        );
    }
    spin.join()
        .map_err(|_| anyhow::anyhow!("spinning thread panicked"))?;
    Ok(())
}
