use std::sync::Arc;

use super::*;
use crate::{process::ContainerInfo, resolve::SampleKind, tracectx::TraceLabels};

#[test]
fn defaults_and_every_parameter() {
    assert_eq!(
        PullRequest::parse("").unwrap(),
        PullRequest {
            seconds: DEFAULT_SECONDS,
            filter: Filter::default(),
            hz: None
        }
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let container = "c0ffee0123456789";
    let request = PullRequest::parse(&format!(
        "seconds=300&pid=12&pid=34&hz=99&trace_id={}&container=docker://{container}&debug=1",
        trace.to_uppercase()
    ))
    .unwrap();
    assert_eq!(request.seconds, 300);
    assert_eq!(request.hz, Some(99));
    assert_eq!(request.filter.pids, [12, 34]);
    assert_eq!(request.filter.trace_id.as_deref(), Some(trace));
    assert_eq!(request.filter.container.as_deref(), Some(container));
    assert_eq!(
        request.filter.to_string(),
        format!("pid=12,34 container={container} trace_id={trace}")
    );
    assert_eq!(
        Filter::default().to_string(),
        "all the samples of the recording"
    );
}

#[test]
fn bad_parameters_say_why_in_one_line() {
    for (query, words) in [
        ("seconds=0", "from 1 to 300"),
        ("seconds=301", "from 1 to 300"),
        ("seconds=-1", "from 1 to 300"),
        ("seconds=1.5", "from 1 to 300"),
        ("seconds=1&seconds=2", "given twice"),
        ("pid=0", "not a process ID"),
        ("pid=abc", "not a process ID"),
        ("hz=0", "positive integer"),
        ("trace_id=xyz", "32 hex digits"),
        ("container=abc", "not a container ID"),
        ("cgroup=", "give a cgroup path"),
        ("colour=red", "unknown parameter `colour`"),
    ] {
        let err = PullRequest::parse(query).unwrap_err().0;
        assert!(err.contains(words) && !err.contains('\n'), "{query}: {err}");
    }
    let many = vec!["pid=1"; 65].join("&");
    assert!(
        PullRequest::parse(&many)
            .unwrap_err()
            .0
            .contains("at most 64")
    );
    let long = "pid=1&".repeat(1000);
    assert!(
        PullRequest::parse(&long)
            .unwrap_err()
            .0
            .contains("more than 4096")
    );
}

#[test]
fn an_unknown_cgroup_is_a_bad_request() {
    let err = PullRequest::parse("cgroup=/no/such/cgroup/here")
        .unwrap_err()
        .0;
    assert!(err.starts_with("cgroup"), "{err}");
    assert!(!err.contains("--cgroup"), "{err}");
}

fn sample(pid: u32, container: Option<&str>, trace: Option<&str>) -> ResolvedSample {
    ResolvedSample {
        locations: Arc::from([]),
        labels: Labels {
            pid,
            thread_id: pid,
            comm: "app".into(),
            thread_name: "app".into(),
            trace: trace.map(|id| {
                Arc::new(TraceLabels {
                    trace_id: id.into(),
                    span_id: "00f067aa0ba902b7".into(),
                    service_name: None,
                    attributes: Vec::new(),
                })
            }),
            container: container.map(|id| {
                Arc::new(ContainerInfo {
                    container_id: id.into(),
                    pod_uid: None,
                })
            }),
        },
        kind: SampleKind::Cpu,
        count: 1,
        nanos: 1,
    }
}

#[test]
fn every_part_of_a_filter_must_match() {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let container = format!("{}{}", "ab".repeat(6), "0".repeat(52));
    let mut matcher = Matcher::new(Filter {
        pids: vec![7, 8],
        container: Some("abababababab".into()),
        cgroup: None,
        trace_id: Some(trace.into()),
    });
    assert!(matcher.matches(&sample(7, Some(&container), Some(trace))));
    assert!(matcher.matches(&sample(8, Some(&container), Some(trace))));
    assert!(
        !matcher.matches(&sample(9, Some(&container), Some(trace))),
        "pid"
    );
    assert!(
        !matcher.matches(&sample(7, None, Some(trace))),
        "no container"
    );
    let elsewhere = format!("ff{}", &container[2..]);
    assert!(
        !matcher.matches(&sample(7, Some(&elsewhere), Some(trace))),
        "container"
    );
    assert!(
        !matcher.matches(&sample(7, Some(&container), None)),
        "no trace"
    );
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    assert!(!matcher.matches(&sample(7, Some(&container), Some(other_trace))));
    let mut everything = Matcher::new(Filter::default());
    assert!(everything.matches(&sample(1, None, None)));
}

#[test]
fn a_cgroup_filter_takes_the_processes_at_or_below_it() {
    let Some(mount) = cgroup_targets::cgroup2_mount() else {
        // No cgroup2 here: `cgroup=` is refused (a_bad_request above); nothing to match.
        assert!(PullRequest::parse("cgroup=/").is_err());
        return;
    };
    let own = process_cgroup(std::process::id()).expect("our own cgroup");
    let ours = mount.join(&own);
    let mut inside = Matcher::new(Filter {
        cgroup: Some(fs::canonicalize(&ours).unwrap()),
        ..Filter::default()
    });
    assert!(inside.matches(&sample(std::process::id(), None, None)));
    // The root takes every process; a sibling's subtree does not take ours.
    let mut root = Matcher::new(Filter {
        cgroup: Some(fs::canonicalize(&mount).unwrap()),
        ..Filter::default()
    });
    assert!(root.matches(&sample(std::process::id(), None, None)));
    let mut elsewhere = Matcher::new(Filter {
        cgroup: Some(mount.join("no-such-sibling-cgroup")),
        ..Filter::default()
    });
    assert!(!elsewhere.matches(&sample(std::process::id(), None, None)));
    assert!(
        !inside.matches(&sample(u32::MAX, None, None)),
        "a process gone"
    );
}
