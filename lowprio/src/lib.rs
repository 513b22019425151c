//! Lowers a thread's scheduling priority for background work (today: the retention pass).
//!
//! A nice value decides how a busy core is shared, not how soon a request's thread gets it
//! back: Linux's scheduler (EEVDF, 6.6+) lets a running thread finish its slice (the base slice
//! scaled by the number of CPUs: 1.4 ms on our 2-core machines) before a thread that wakes on
//! the same core runs, whatever their nice values. So a background thread also asks for the
//! shortest slice, 0.1 ms (Linux 6.12+; earlier kernels ignore the request and only the nice
//! value applies). Threads it starts inherit both.

use std::io;
use std::time::Duration;

/// The shortest slice Linux accepts (it clamps requests to 0.1–100 ms).
pub const SHORTEST_SLICE: Duration = Duration::from_micros(100);

/// Gives the calling thread nice value `nice` under the normal policy, and asks for `slice` as
/// its scheduler slice. Linux only; elsewhere it does nothing. Where the kernel refuses the
/// call (a sandbox without `sched_setattr`), the nice value is still set, and the error says
/// the slice was not.
pub fn lower_current_thread(nice: i32, slice: Duration) -> io::Result<()> {
    lower_thread(0, nice, slice)
}

/// As [`lower_current_thread`], for thread `tid` of this process (0: the calling thread).
pub fn lower_thread(tid: i32, nice: i32, slice: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::set_normal(tid, nice, slice).inspect_err(|_| {
            let pid = rustix::process::Pid::from_raw(tid);
            let _ = rustix::process::setpriority_process(pid, nice);
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, nice, slice);
        Ok(())
    }
}

/// The scheduler slice of thread `tid` of this process (0: the calling thread), in
/// nanoseconds, as the scheduler's debug view (`/proc/…/sched`) shows it; `None` where it does
/// not (not Linux, or a kernel without that view).
pub fn slice_ns(tid: i32) -> Option<u64> {
    let path = match tid {
        0 => "/proc/thread-self/sched".to_owned(),
        tid => format!("/proc/self/task/{tid}/sched"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "se.slice").then(|| value.trim().parse().ok())?
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::time::Duration;

    /// The kernel's `struct sched_attr` (include/uapi/linux/sched/types.h), first version plus
    /// the utilisation clamps (size 56).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        /// For the normal policy, the requested slice in nanoseconds (Linux 6.12+).
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
        sched_util_min: u32,
        sched_util_max: u32,
    }
    const _: () = assert!(std::mem::size_of::<SchedAttr>() == 56);

    pub(super) fn set_normal(tid: i32, nice: i32, slice: Duration) -> io::Result<()> {
        let mut attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_nice: nice.clamp(-20, 19),
            sched_runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            ..SchedAttr::default()
        };
        // SAFETY: sched_setattr(2) reads `attr.size` bytes from a valid, initialised, exclusively
        // borrowed `struct sched_attr` that outlives the call; the only write it may do (on
        // E2BIG, the kernel's own size into `size`) stays within it.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                tid as libc::c_long,
                &mut attr as *mut SchedAttr,
                0 as libc::c_uint,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command's closing parenthesis; the nice value is the 19th field.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_lowered_thread_and_the_threads_it_starts_run_at_nice_19_with_the_shortest_slice() {
        std::thread::spawn(|| {
            lower_current_thread(19, SHORTEST_SLICE).unwrap();
            assert_eq!(nice(), 19);
            // The slice shows where the kernel has custom slices (6.12+) and a debug view.
            let slice = slice_ns(0);
            match slice {
                Some(slice) => assert_eq!(slice, 100_000, "0.1 ms"),
                None => assert!(
                    std::env::var_os("CI").is_none(),
                    "CI machines run Linux 6.12+ with /proc/thread-self/sched"
                ),
            }
            let child = std::thread::spawn(move || (nice(), slice_ns(0)))
                .join()
                .unwrap();
            assert_eq!(child, (19, slice), "inherited");
        })
        .join()
        .unwrap();
    }
}
