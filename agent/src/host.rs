//! Facts about the host, read through `sysinfo`: the operating system and its version, the
//! kernel, the architecture, CPUs, memory, load, the root file system's usage and the uptime.
//! The agent sends them in its hello and again every [`Config::host_facts_interval`]
//! (`crate::config::Config`) in a heartbeat; the server shows them on `GET /v2/agents/{id}`.
//!
//! Each reading builds the `sysinfo` structures it needs and drops them, so nothing stays
//! resident between readings (the agent idles in a few MiB). A fact the platform cannot tell is
//! left out rather than guessed.

use std::path::Path;

use medic_protocol::HostFacts;
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

/// Reads the host's facts now.
pub fn facts() -> HostFacts {
    let mut facts = HostFacts {
        os_name: System::name().ok().filter(|s| !s.is_empty()),
        os_version: System::os_version().ok().filter(|s| !s.is_empty()),
        kernel_version: System::kernel_version().ok().filter(|s| !s.is_empty()),
        arch: Some(System::cpu_arch()).filter(|s| !s.is_empty()),
        load_average: load_average(),
        uptime_seconds: System::uptime().ok(),
        ..HostFacts::default()
    };
    if let Ok(mut system) = System::new() {
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        system.refresh_cpu_list(CpuRefreshKind::nothing());
        let cpus = system.cpus().len();
        facts.cpus = u32::try_from(cpus).ok().filter(|&n| n > 0);
        facts.memory_total_bytes = Some(system.total_memory()).filter(|&n| n > 0);
        facts.memory_available_bytes =
            Some(system.available_memory()).filter(|_| facts.memory_total_bytes.is_some());
    }
    if let Ok(disks) =
        Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage())
        && let Some(root) = disks.iter().find(|d| d.mount_point() == Path::new("/"))
    {
        facts.root_disk_total_bytes = Some(root.total_space());
        facts.root_disk_available_bytes = Some(root.available_space());
    }
    facts
}

/// The 1, 5 and 15 minute load averages, when the platform has them (not on Windows).
pub fn load_average() -> Option<[f64; 3]> {
    let load = System::load_average().ok()?;
    let values = [load.one, load.five, load.fifteen];
    values
        .iter()
        .all(|l| l.is_finite() && *l >= 0.0)
        .then_some(values)
}
