//! Consecutive-result thresholds: a check flips only after `success_threshold` results better
//! than what it shows, or `failure_threshold` results worse (Consul's `success_before_passing` /
//! `failures_before_critical`). A result equal to what is shown resets both counts.

use crate::Status;
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) successes: u32,
    pub(crate) failures: u32,
}

impl Counts {
    /// Takes in the status a probe `saw`; returns the status the check now `shows` and, while a
    /// change waits for its threshold, a note saying how far along it is.
    pub(crate) fn next(
        &mut self,
        shows: Status,
        saw: Status,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> (Status, Option<String>) {
        let (count, threshold, word) = match saw.cmp(&shows) {
            Ordering::Equal => {
                *self = Counts::default();
                return (shows, None);
            }
            Ordering::Less => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes, success_threshold, "success")
            }
            Ordering::Greater => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (self.failures, failure_threshold, "failure")
            }
        };
        if count >= threshold {
            *self = Counts::default();
            (saw, None)
        } else {
            let note = format!("{word} {count} of {threshold} before {saw}");
            (shows, Some(note))
        }
    }
}

#[cfg(test)]
mod tests;
