//! Kernel memory held by a process's BPF maps, as the kernel accounts it (`memlock` in each
//! map's fdinfo): charged to the memory cgroup (the pod's), and not part of the resident size.

use std::{collections::HashMap, fs};

/// Bytes of kernel memory of every BPF map this process holds a descriptor of, each map once.
pub fn held_bytes() -> u64 {
    held_bytes_by("self")
}

/// [`held_bytes`] of process `pid` (a number, or `self`); 0 when its descriptors cannot be read.
pub fn held_bytes_by(pid: &str) -> u64 {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let mut maps: HashMap<u64, u64> = HashMap::new();
    for entry in fds.flatten() {
        if !fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-map") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Ok(text) = fs::read_to_string(info)
            && let (Some(id), Some(bytes)) = (field(&text, "map_id:"), field(&text, "memlock:"))
        {
            maps.insert(id, bytes);
        }
    }
    maps.values().sum()
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_of_a_map_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t1183744\nmap_id:\t42\n";
        assert_eq!(field(text, "memlock:"), Some(1_183_744));
        assert_eq!(field(text, "map_id:"), Some(42));
        assert_eq!(field(text, "frozen:"), None);
    }
}
