use super::Counts;
use crate::Status::{self, *};

/// Feeds `seen` in order from `start`; returns what the check shows after each.
fn run(start: Status, seen: &[Status], success: u32, failure: u32) -> Vec<Status> {
    let mut counts = Counts::default();
    let mut shows = start;
    seen.iter()
        .map(|&s| {
            shows = counts.next(shows, s, success, failure).0;
            shows
        })
        .collect()
}

#[test]
fn thresholds_of_one_follow_every_result() {
    assert_eq!(run(Critical, &[Passing, Warning, Critical, Passing], 1, 1), [Passing, Warning, Critical, Passing]);
}

#[test]
fn failure_threshold_needs_consecutive_failures() {
    assert_eq!(
        run(Passing, &[Critical, Critical, Passing, Critical, Critical, Critical], 1, 3),
        [Passing, Passing, Passing, Passing, Passing, Critical]
    );
    // Warnings and criticals both count as failures; the flip shows the latest.
    assert_eq!(run(Passing, &[Warning, Critical, Warning], 1, 3), [Passing, Passing, Warning]);
}

#[test]
fn success_threshold_needs_consecutive_successes() {
    assert_eq!(run(Critical, &[Passing, Critical, Passing, Passing], 2, 1), [Critical, Critical, Critical, Passing]);
}

#[test]
fn note_says_how_far_along() {
    let mut c = Counts::default();
    assert_eq!(c.next(Passing, Critical, 1, 3), (Passing, Some("failure 1 of 3 before critical".into())));
    assert_eq!(c.next(Passing, Critical, 1, 3), (Passing, Some("failure 2 of 3 before critical".into())));
    assert_eq!(c.next(Passing, Critical, 1, 3), (Critical, None));
}

#[test]
fn zero_thresholds_act_as_one() {
    assert_eq!(run(Critical, &[Passing, Critical], 0, 0), [Passing, Critical]);
}
