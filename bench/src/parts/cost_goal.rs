//! Issue 18's goals for the kernel cost per sample, and the floor rule that may replace them.
//!
//! The goal is a share of bpftrace's cost measured in the same window: half of it on the plain
//! fixture, 0.6 of it when our program also reads a trace context. A share no program can reach
//! is no goal: when the floor (both stacks by `bpf_get_stackid` and one counter, the least a
//! stack sampler does) already costs more than that share of bpftrace, the goal becomes staying
//! within [`FLOOR_SLACK`] of the floor instead, and the report says which rule applied, with
//! the figures that decided it.

use crate::report::Target;

/// Our cost over bpftrace's allowed on the plain fixture.
pub const PLAIN_SHARE: f64 = 0.5;
/// The same, reading a trace context on every sample.
pub const TRACED_SHARE: f64 = 0.6;
/// Our cost over the floor's allowed when the floor rule applies.
pub const FLOOR_SLACK: f64 = 1.2;

/// Medians over the rounds of ratios taken within one window each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    pub ours_over_bpftrace: f64,
    pub ours_over_floor: f64,
    pub floor_over_bpftrace: f64,
}

/// Which goal holds for a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Ours ≤ `share` × bpftrace's: the floor is under that share.
    Bpftrace { share: f64 },
    /// Ours ≤ [`FLOOR_SLACK`] × the floor's: the floor itself is above `share` × bpftrace's.
    Floor { share: f64 },
}

impl Rule {
    /// The floor rule replaces the share of bpftrace when the floor sits above it.
    pub fn for_share(share: f64, floor_over_bpftrace: f64) -> Self {
        if floor_over_bpftrace > share {
            Rule::Floor { share }
        } else {
            Rule::Bpftrace { share }
        }
    }

    pub fn met(self, r: Ratios) -> bool {
        match self {
            Rule::Bpftrace { share } => r.ours_over_bpftrace <= share,
            Rule::Floor { .. } => r.ours_over_floor <= FLOOR_SLACK,
        }
    }
}

/// The Targets row of one depth and fixture; `what` names them ("10 frames, trace context
/// read").
pub fn target(share: f64, what: &str, r: Ratios) -> Target {
    let rule = Rule::for_share(share, r.floor_over_bpftrace);
    let (goal, measured) = match rule {
        Rule::Bpftrace { share } => (
            format!("Kernel cost per sample ≤ {share}× bpftrace's ({what})"),
            format!(
                "{:.2}× bpftrace's (floor {:.2}× bpftrace's, ours {:.2}× the floor's)",
                r.ours_over_bpftrace, r.floor_over_bpftrace, r.ours_over_floor
            ),
        ),
        Rule::Floor { share } => (
            format!(
                "Kernel cost per sample ≤ {FLOOR_SLACK}× the floor's ({what}; the floor rule: \
                 the floor is above {share}× bpftrace's)"
            ),
            format!(
                "{:.2}× the floor's (floor {:.2}× bpftrace's, ours {:.2}× bpftrace's)",
                r.ours_over_floor, r.floor_over_bpftrace, r.ours_over_bpftrace
            ),
        ),
    };
    Target {
        goal,
        measured,
        met: rule.met(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratios(ours_over_bpftrace: f64, floor_over_bpftrace: f64) -> Ratios {
        Ratios {
            ours_over_bpftrace,
            ours_over_floor: ours_over_bpftrace / floor_over_bpftrace,
            floor_over_bpftrace,
        }
    }

    #[test]
    fn a_floor_under_the_share_keeps_the_share_of_bpftrace() {
        let r = ratios(0.45, 0.3);
        assert_eq!(
            Rule::for_share(PLAIN_SHARE, r.floor_over_bpftrace),
            Rule::Bpftrace { share: 0.5 }
        );
        let t = target(PLAIN_SHARE, "10 frames", r);
        assert!(t.met);
        assert_eq!(
            t.goal,
            "Kernel cost per sample ≤ 0.5× bpftrace's (10 frames)"
        );
        assert_eq!(
            t.measured,
            "0.45× bpftrace's (floor 0.30× bpftrace's, ours 1.50× the floor's)"
        );
        // 1.5× the floor does not matter under this rule; 0.55× bpftrace's does.
        assert!(!target(PLAIN_SHARE, "10 frames", ratios(0.55, 0.3)).met);
    }

    #[test]
    fn a_floor_above_the_share_makes_the_floor_the_goal() {
        // The floor costs 0.7 of bpftrace: 0.5 is out of reach for any stack sampler.
        let near = ratios(0.8, 0.7);
        assert_eq!(
            Rule::for_share(PLAIN_SHARE, 0.7),
            Rule::Floor { share: 0.5 }
        );
        let t = target(PLAIN_SHARE, "60 frames", near);
        assert!(t.met, "{t:?}");
        assert_eq!(
            t.goal,
            "Kernel cost per sample ≤ 1.2× the floor's (60 frames; the floor rule: the floor \
             is above 0.5× bpftrace's)"
        );
        assert_eq!(
            t.measured,
            "1.14× the floor's (floor 0.70× bpftrace's, ours 0.80× bpftrace's)"
        );
        assert!(!target(PLAIN_SHARE, "60 frames", ratios(0.9, 0.7)).met);
    }

    #[test]
    fn the_trace_context_share_is_its_own_threshold() {
        // 0.55: above the plain share, under the trace context's.
        assert_eq!(
            Rule::for_share(PLAIN_SHARE, 0.55),
            Rule::Floor { share: 0.5 }
        );
        assert_eq!(
            Rule::for_share(TRACED_SHARE, 0.55),
            Rule::Bpftrace { share: 0.6 }
        );
        // Exactly at the share, the share still holds (the floor could just meet it).
        assert_eq!(
            Rule::for_share(PLAIN_SHARE, 0.5),
            Rule::Bpftrace { share: 0.5 }
        );
    }

    #[test]
    fn limits_are_inclusive() {
        assert!(Rule::Bpftrace { share: 0.5 }.met(ratios(0.5, 0.2)));
        let at_slack = Ratios {
            ours_over_bpftrace: 0.84,
            ours_over_floor: 1.2,
            floor_over_bpftrace: 0.7,
        };
        assert!(Rule::Floor { share: 0.5 }.met(at_slack));
    }
}
