//! What a wake-up costs on this machine: the number that decides how close
//! a three-process signing path can come to in-process signing.
//!
//! Two threads bounce one byte over a Unix socket pair, each waiting for
//! the other's byte as the module and the daemon wait for frames
//! ([`read_when_ready`]), first both pinned to one core, then on two
//! different cores. Every round trip is two wake-ups; the signing path has
//! four hand-overs per signature (client → daemon → card → daemon →
//! client).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mesign_proto::quiet_read::read_when_ready;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Round trips per batch; the median of [`BATCHES`] batches is reported.
const ROUND_TRIPS: u32 = 5_000;
const BATCHES: usize = 5;

/// Median round-trip times with both threads on one core and on two.
#[derive(Clone, Copy, Debug)]
pub struct WakeUps {
    pub same_core: Duration,
    pub across_cores: Option<Duration>,
}

/// Measures [`WakeUps`] on the cores this process may use. `None` when
/// the process cannot pin threads (no affinity support).
pub fn measure() -> Option<WakeUps> {
    let cores = allowed_cores()?;
    let first = *cores.first()?;
    let same_core = median_round_trip(first, first)?;
    let across_cores = match cores.get(1) {
        Some(&second) => Some(median_round_trip(first, second)?),
        None => None,
    };
    Some(WakeUps {
        same_core,
        across_cores,
    })
}

/// The CPUs in this process's affinity mask.
pub fn allowed_cores() -> Option<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    Some(
        (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
    )
}

/// Restricts the calling thread (and every thread and process it starts
/// afterwards) to `cpu`.
pub fn pin_to(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

fn read_byte(stream: &UnixStream, byte: &mut [u8; 1]) -> Option<()> {
    (read_when_ready(stream.as_fd(), byte, None).ok()? == 1).then_some(())
}

fn median_round_trip(ping_cpu: usize, pong_cpu: usize) -> Option<Duration> {
    let (mut ping, mut pong) = UnixStream::pair().ok()?;
    let echo = std::thread::spawn(move || -> Option<()> {
        pin_to(pong_cpu).ok()?;
        let mut byte = [0u8; 1];
        for _ in 0..ROUND_TRIPS as usize * BATCHES {
            read_byte(&pong, &mut byte)?;
            pong.write_all(&byte).ok()?;
        }
        Some(())
    });
    // Measured on a helper thread so the caller's own affinity is untouched.
    let timed = std::thread::spawn(move || -> Option<Vec<Duration>> {
        pin_to(ping_cpu).ok()?;
        let mut byte = [1u8; 1];
        let mut batches = Vec::with_capacity(BATCHES);
        for _ in 0..BATCHES {
            let start = Instant::now();
            for _ in 0..ROUND_TRIPS {
                ping.write_all(&byte).ok()?;
                read_byte(&ping, &mut byte)?;
            }
            batches.push(start.elapsed() / ROUND_TRIPS);
        }
        Some(batches)
    });
    let mut batches = timed.join().ok()??;
    echo.join().ok()??;
    batches.sort();
    Some(batches[BATCHES / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_restricts_the_calling_thread_only() {
        let cores = allowed_cores().unwrap();
        let cpu = *cores.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_to(cpu).unwrap();
            allowed_cores().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![cpu]);
        assert_eq!(allowed_cores().unwrap(), cores);
    }

    #[test]
    fn both_pairings_are_measured_where_there_are_two_cores() {
        let w = measure().unwrap();
        assert!(w.same_core > Duration::ZERO);
        assert_eq!(w.across_cores.is_some(), allowed_cores().unwrap().len() > 1);
    }
}
