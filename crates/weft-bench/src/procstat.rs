//! Resident memory and CPU time of a process and its children, from /proc (Linux).

use std::path::Path;

/// Clock ticks per second for /proc/PID/stat times.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of /proc/PID/stat after the command name (which may contain spaces and parens).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// `pid` and its direct children (nginx: the master and its workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // Field 4 of stat is the parent pid; index 1 after the command name.
            if stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// User and system (kernel) CPU time of the processes (all their threads), in milliseconds.
pub fn cpu_times_ms(pids: &[u32]) -> (f64, f64) {
    let (user, sys) = pids
        .iter()
        .filter_map(|&p| {
            let f = stat_fields(p)?;
            // utime and stime are fields 14 and 15 of stat: indexes 11 and 12 here.
            Some((f.get(11)?.parse::<u64>().ok()?, f.get(12)?.parse::<u64>().ok()?))
        })
        .fold((0u64, 0u64), |(u, s), (du, ds)| (u + du, s + ds));
    let ms = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_sec();
    (ms(user), ms(sys))
}

/// User + system CPU time of the processes (all their threads), in milliseconds.
pub fn cpu_ms(pids: &[u32]) -> f64 {
    let (user, sys) = cpu_times_ms(pids);
    user + sys
}

/// Busy CPU time of the whole machine (all CPUs: user, nice, system, irq, softirq, steal), ms.
pub fn machine_busy_ms() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 * 1000.0 / ticks_per_sec()
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// VmRSS summed over the processes, in KiB (pages shared between nginx's master and workers are
/// counted once per process, as `ps` does).
pub fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| status_kb(p, "VmRSS:")).sum()
}

/// RssAnon summed over the processes, in KiB: the part of VmRSS that is the process's own heap
/// and stacks (the rest is file-backed, mostly the executable's and libraries' pages).
pub fn rss_anon_kb(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| status_kb(p, "RssAnon:")).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kb(&[me]) > 0);
        assert!(rss_anon_kb(&[me]) <= rss_kb(&[me]));
        assert!(family(me).contains(&me));
        // Burn a little CPU so the counter is visibly non-negative and readable.
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_ms(&[me]) >= 0.0);
        // User time grows in clock ticks: burn until it shows, within a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cpu_times_ms(&[me]).0 == 0.0 && std::time::Instant::now() < deadline {
            x = (0..1_000_000u64).fold(x, |a, i| a.wrapping_add(i ^ a));
        }
        // CPU times only grow, so user + sys read between two `cpu_ms` calls lies between them.
        let before = cpu_ms(&[me]);
        let (user, sys) = cpu_times_ms(&[me]);
        let after = cpu_ms(&[me]);
        assert!(user > 0.0 && sys >= 0.0, "user {user} sys {sys} ({x})");
        assert!(
            before <= user + sys && user + sys <= after,
            "cpu_ms is user + sys: {before} ≤ {user} + {sys} ≤ {after}"
        );
        assert_eq!(cpu_ms(&[u32::MAX]), 0.0);
        assert!(machine_busy_ms() > 0.0);
    }
}
