//! Peak memory stays flat: a dump many times larger than the 32 MiB bound passes through
//! db-backup (plain and zstd) and db-restore while the xtask's own peak RSS stays under it.
//! No timing is asserted anywhere in the suite; this is the one performance test.

use std::{
    fs,
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use crate::testbed::{Bed, Flavor};

const BOUND_KIB: u64 = 32 * 1024;

/// Runs the xtask with `args` and measures its peak RSS (VmHWM, sampled from /proc until it
/// exits), checking it succeeded and stayed under the bound.
fn assert_peak_under_bound(bed: &Bed, args: &[&str]) {
    let child = bed.xtask(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (peak, ok, stderr) = peak_kib_while_running(child);
    assert!(ok, "{stderr}");
    assert!(peak > 0, "the sampling saw the process");
    assert!(stderr.lines().last().unwrap().contains("peak memory"), "it reports its own: {stderr}");
    eprintln!("{args:?}: peak RSS {peak} KiB");
    assert!(peak < BOUND_KIB, "{args:?}: peak RSS {peak} KiB");
}

fn peak_kib_while_running(mut child: Child) -> (u64, bool, String) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let mut peak = 0;
    loop {
        if let Ok(status) = fs::read_to_string(&status_file)
            && let Some(kib) =
                status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (peak, status.success(), reader.join().unwrap());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn peak_memory_stays_under_32_mib_for_a_dump_ten_times_larger() {
    let bed = Bed::new("memory", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS body FROM generate_series(1, 1500000) g;");

    for compress in ["none", "zstd"] {
        assert_peak_under_bound(&bed, &["db-backup", "--compress", compress]);
    }
    let plain = bed.backups().into_iter().find(|p| p.to_string_lossy().ends_with(".sql")).unwrap();
    let size = fs::metadata(&plain).unwrap().len();
    assert!(size > 10 * BOUND_KIB * 1024, "the dump ({size} bytes) is over ten times the bound");

    let zst = bed.files().into_iter().find(|p| p.to_string_lossy().ends_with(".sql.zst")).unwrap();
    for backup in [&plain, &zst] {
        assert_peak_under_bound(&bed, &["db-restore", backup.to_str().unwrap(), "--yes"]);
    }
}
