//! What a `GET /debug/pprof/profile` asks for: its query string, checked, and the filter its
//! samples must pass. The parameters are Go's (`seconds`) and ours (`pid`, `container`,
//! `cgroup`, `trace_id`, `hz`); one that is not known is refused, so that a typo does not
//! silently widen a profile to the whole host.

use std::{
    collections::HashMap,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use crate::{
    process::cgroup_targets,
    resolve::{Labels, ResolvedSample},
};

/// Go's default when `seconds` is absent.
pub const DEFAULT_SECONDS: u64 = 30;
/// The longest capture a request may ask for.
pub const MAX_SECONDS: u64 = 300;
/// PIDs one request may name.
const MAX_PIDS: usize = 64;
/// A query string longer than this is refused before it is parsed.
const MAX_QUERY: usize = 4096;

/// A request's parameters, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct PullRequest {
    pub seconds: u64,
    pub filter: Filter,
    /// `hz=`: the rate asked for the request's duration.
    pub hz: Option<u64>,
}

/// Which samples go into a pulled profile; every part given must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Any of these processes (none: any process).
    pub pids: Vec<u32>,
    /// A container ID or a prefix of at least 12 hex digits.
    pub container: Option<String>,
    /// A cgroup directory, resolved when the request arrives.
    pub cgroup: Option<PathBuf>,
    /// 32 lowercase hex digits.
    pub trace_id: Option<String>,
}

/// For the profile's comments: `pid=1,2 container=abc…`, or `the whole recording`.
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.pids.is_empty() {
            let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
            parts.push(format!("pid={}", pids.join(",")));
        }
        if let Some(id) = &self.container {
            parts.push(format!("container={id}"));
        }
        if let Some(dir) = &self.cgroup {
            parts.push(format!("cgroup={}", dir.display()));
        }
        if let Some(id) = &self.trace_id {
            parts.push(format!("trace_id={id}"));
        }
        if parts.is_empty() {
            f.write_str("all the samples of the recording")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// A bad request, said in one line (the answer's body, with status 400).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

impl PullRequest {
    /// Parses a query string (without the `?`). `cgroup=` is checked against the cgroup2 mount.
    pub fn parse(query: &str) -> Result<PullRequest, BadRequest> {
        if query.len() > MAX_QUERY {
            return Err(bad(format!(
                "the query string is {} bytes, more than {MAX_QUERY}",
                query.len()
            )));
        }
        let mut seconds = None;
        let mut hz = None;
        let mut filter = Filter::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "seconds" => seconds = Some(once("seconds", seconds, seconds_of(&value)?)?),
                "hz" => hz = Some(once("hz", hz, hz_of(&value)?)?),
                "pid" => {
                    if filter.pids.len() >= MAX_PIDS {
                        return Err(bad(format!("at most {MAX_PIDS} pid= parameters")));
                    }
                    filter
                        .pids
                        .push(value.parse().ok().filter(|&pid| pid > 0).ok_or_else(|| {
                            bad(format!(
                                "pid={value}: not a process ID (a positive integer)"
                            ))
                        })?);
                }
                "container" => {
                    let id = container_of(&value)?;
                    filter.container = Some(once("container", filter.container.take(), id)?);
                }
                "cgroup" => {
                    let dir = cgroup_of(&value)?;
                    filter.cgroup = Some(once("cgroup", filter.cgroup.take(), dir)?);
                }
                "trace_id" => {
                    let id = trace_id_of(&value)?;
                    filter.trace_id = Some(once("trace_id", filter.trace_id.take(), id)?);
                }
                // Go's endpoint takes `debug` and `gc` on other profiles; a scraper may send
                // them, and they change nothing in a CPU profile.
                "debug" | "gc" => {}
                other => {
                    return Err(bad(format!(
                        "unknown parameter `{other}`: this endpoint takes seconds, pid, container, \
                         cgroup, trace_id and hz"
                    )));
                }
            }
        }
        Ok(PullRequest {
            seconds: seconds.unwrap_or(DEFAULT_SECONDS),
            filter,
            hz,
        })
    }
}

/// A parameter given twice is refused rather than one of them silently ignored.
fn once<T>(name: &str, before: Option<T>, value: T) -> Result<T, BadRequest> {
    match before {
        Some(_) => Err(bad(format!("{name}= is given twice"))),
        None => Ok(value),
    }
}

fn seconds_of(value: &str) -> Result<u64, BadRequest> {
    value
        .parse::<u64>()
        .ok()
        .filter(|seconds| (1..=MAX_SECONDS).contains(seconds))
        .ok_or_else(|| {
            bad(format!(
                "seconds={value}: give a whole number of seconds from 1 to {MAX_SECONDS}"
            ))
        })
}

fn hz_of(value: &str) -> Result<u64, BadRequest> {
    value
        .parse::<u64>()
        .ok()
        .filter(|&hz| hz > 0)
        .ok_or_else(|| bad(format!("hz={value}: give a rate in Hz, a positive integer")))
}

/// A container ID as `--container` takes it: 64 hex digits, a prefix of at least 12, or
/// `runtime://ID`.
fn container_of(value: &str) -> Result<String, BadRequest> {
    let id = value
        .rsplit("://")
        .next()
        .unwrap_or(value)
        .to_ascii_lowercase();
    let hex = id.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && (12..=64).contains(&id.len()) {
        Ok(id)
    } else {
        Err(bad(format!(
            "container={value}: not a container ID (64 hex digits, a prefix of at least 12, or \
             runtime://ID)"
        )))
    }
}

fn trace_id_of(value: &str) -> Result<String, BadRequest> {
    let id = value.to_ascii_lowercase();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(bad(format!("trace_id={value}: give 32 hex digits")))
    }
}

/// The cgroup's directory, as `--cgroup` resolves it (a path of the cgroup2 mount, or the one
/// `/proc/PID/cgroup` shows).
fn cgroup_of(value: &str) -> Result<PathBuf, BadRequest> {
    if value.is_empty() {
        return Err(bad("cgroup=: give a cgroup path"));
    }
    cgroup_targets::resolve(&[PathBuf::from(value)], &[])
        .map_err(|err| {
            let reason = err.to_string();
            bad(reason
                .replacen("--cgroup ", "cgroup=", 1)
                .replace("--cgroup and --container need", "cgroup= needs"))
        })?
        .into_iter()
        .next()
        .map(|target| fs::canonicalize(&target.path).unwrap_or(target.path))
        .ok_or_else(|| bad(format!("cgroup={value}: no such cgroup")))
}

/// Decides whether samples pass a [`Filter`]. A cgroup filter reads `/proc/PID/cgroup` once per
/// process of the request (a process gone by then is left out).
pub struct Matcher {
    filter: Filter,
    /// The cgroup2 mount, when the filter names a cgroup.
    mount: Option<PathBuf>,
    in_cgroup: HashMap<u32, bool>,
}

/// Distinct processes whose cgroup one request remembers; past it, each is read again.
const MAX_REMEMBERED: usize = 65_536;

impl Matcher {
    pub fn new(filter: Filter) -> Self {
        let mount = filter
            .cgroup
            .as_ref()
            .and_then(|_| cgroup_targets::cgroup2_mount());
        Self {
            filter,
            mount,
            in_cgroup: HashMap::new(),
        }
    }

    pub fn matches(&mut self, sample: &ResolvedSample) -> bool {
        self.labels_match(&sample.labels)
    }

    fn labels_match(&mut self, labels: &Labels) -> bool {
        let filter = &self.filter;
        if !filter.pids.is_empty() && !filter.pids.contains(&labels.pid) {
            return false;
        }
        if let Some(prefix) = &filter.container {
            let id = labels.container.as_ref().map(|c| c.container_id.as_str());
            if !id.is_some_and(|id| id.starts_with(prefix.as_str())) {
                return false;
            }
        }
        if let Some(trace_id) = &filter.trace_id {
            let id = labels.trace.as_ref().map(|t| t.trace_id.as_str());
            if id != Some(trace_id.as_str()) {
                return false;
            }
        }
        match (&filter.cgroup, &self.mount) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(cgroup), Some(mount)) => {
                if let Some(&known) = self.in_cgroup.get(&labels.pid) {
                    return known;
                }
                let inside = process_cgroup(labels.pid)
                    .is_some_and(|path| mount.join(path).starts_with(cgroup));
                if self.in_cgroup.len() < MAX_REMEMBERED {
                    self.in_cgroup.insert(labels.pid, inside);
                }
                inside
            }
        }
    }
}

/// The cgroup v2 path (`0::/path`, made relative) of a process, from at most 64 KiB of
/// `/proc/PID/cgroup`.
fn process_cgroup(pid: u32) -> Option<PathBuf> {
    let file = fs::File::open(Path::new("/proc").join(pid.to_string()).join("cgroup")).ok()?;
    let mut text = String::new();
    file.take(64 << 10).read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| PathBuf::from(path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests;
