//! Runs the real `ferrite-perf` binary with temporary configs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn perf(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite-perf"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("ferrite-perf runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes a config creating `bdevs` (method, params) and returns its path.
fn config(name: &str, bdevs: &[(&str, Value)]) -> PathBuf {
    let calls: Vec<Value> = bdevs
        .iter()
        .map(|(m, p)| serde_json::json!({"method": m, "params": p}))
        .collect();
    let c = serde_json::json!({"subsystems": [{"subsystem": "bdev", "config": calls}]});
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ferrite-perf-{name}-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    path
}

fn malloc(name: &str, blocks: u64, bs: u32) -> (&'static str, Value) {
    (
        "bdev_malloc_create",
        serde_json::json!({"name": name, "num_blocks": blocks, "block_size": bs}),
    )
}

/// Runs `ferrite-perf bdev ARGS -c CONFIG --output json -s 64`; returns the run
/// and its parsed report.
fn bdev_json(cfg: &Path, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["bdev"];
    all.extend_from_slice(args);
    let c = cfg.to_str().unwrap();
    all.extend_from_slice(&["-c", c, "--output", "json", "-s", "64"]);
    let run = perf(&all);
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        )
    });
    (run, report)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

#[test]
fn verify_on_malloc_passes() {
    let cfg = config("verify", &[malloc("Malloc0", 16384, 512)]);
    let (run, r) = bdev_json(&cfg, &["-q", "16", "-o", "4k", "-w", "verify", "-t", "1"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let t = &r["total"];
    assert_eq!(u(&t["fails"]), 0);
    assert_eq!(u(&t["miscompares"]), 0);
    assert!(t["iops"].as_f64().unwrap() > 0.0, "{t}");
    let job = &r["jobs"][0];
    assert_eq!(job["bdev"], "Malloc0");
    // Every write was read back (give or take the ones in flight at the end).
    let (reads, writes) = (u(&job["reads"]), u(&job["writes"]));
    assert!(
        reads > 0 && writes >= reads && writes - reads <= 16,
        "{job}"
    );
    assert_eq!(r["success"], true);
    // Progress lines went to stderr.
    assert!(run.stderr.contains(" IOPS "), "{}", run.stderr);
}

#[test]
fn verify_on_two_reactors_uses_disjoint_ranges() {
    let cores = ferrite_reactor::available_cores();
    if !(cores.contains(&0) && cores.contains(&1)) {
        eprintln!("skipped: needs cores 0 and 1");
        return;
    }
    let cfg = config("verify2", &[malloc("Malloc0", 8192, 4096)]);
    let (run, r) = bdev_json(
        &cfg,
        &[
            "-q", "8", "-o", "8k", "-w", "verify", "-t", "0.5", "-m", "0x3",
        ],
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(u(&r["total"]["miscompares"]), 0);
    assert!(jobs.iter().all(|j| u(&j["ios"]) > 0));
}

#[test]
fn randread_and_randwrite_at_both_block_sizes() {
    for bs in [512u32, 4096] {
        let cfg = config(&format!("rand{bs}"), &[malloc("Malloc0", 8192, bs)]);
        for (w, size) in [
            ("randread", "4096"),
            ("randwrite", "4k"),
            ("randread", "512"),
        ] {
            if size == "512" && bs == 4096 {
                continue;
            }
            let (run, r) = bdev_json(&cfg, &["-q", "32", "-o", size, "-w", w, "-t", "0.5"]);
            assert_eq!(run.code, 0, "{w} bs {bs}: {}", run.stderr);
            let job = &r["jobs"][0];
            assert!(u(&job["ios"]) > 0, "{w} bs {bs}: {job}");
            assert_eq!(u(&job["fails"]), 0);
            if w == "randread" {
                assert_eq!(u(&job["writes"]), 0);
            } else {
                assert_eq!(u(&job["reads"]), 0);
            }
            let t = &r["total"];
            for k in ["avg_us", "p50_us", "p99_us", "p999_us", "max_us", "mib_s"] {
                assert!(t[k].as_f64().unwrap() > 0.0, "{k} in {t}");
            }
        }
    }
}

#[test]
fn randrw_follows_the_read_percentage() {
    let cfg = config("rw", &[malloc("Malloc0", 4096, 512)]);
    for (pct, reads_only, writes_only) in [
        ("100", true, false),
        ("0", false, true),
        ("70", false, false),
    ] {
        let (run, r) = bdev_json(
            &cfg,
            &[
                "-q", "8", "-o", "4k", "-w", "randrw", "-M", pct, "-t", "0.3",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let j = &r["jobs"][0];
        let (reads, writes) = (u(&j["reads"]), u(&j["writes"]));
        assert_eq!(writes == 0, reads_only, "-M {pct}: {j}");
        assert_eq!(reads == 0, writes_only, "-M {pct}: {j}");
        if pct == "70" {
            let share = reads as f64 / (reads + writes) as f64;
            assert!((0.65..0.75).contains(&share), "-M 70 gave {share}");
        }
    }
}

#[test]
fn other_workloads_run_on_malloc_and_null() {
    let cfg = config(
        "misc",
        &[
            malloc("Malloc0", 4096, 512),
            (
                "bdev_null_create",
                serde_json::json!({"name": "Null0", "num_blocks": 4096, "block_size": 4096}),
            ),
        ],
    );
    for w in ["read", "write", "rw", "unmap", "write_zeroes", "flush"] {
        let (run, r) = bdev_json(&cfg, &["-q", "4", "-o", "64k", "-w", w, "-t", "0.2"]);
        assert_eq!(run.code, 0, "{w}: {}", run.stderr);
        let jobs = r["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2, "{w}: one job per bdev");
        assert!(jobs.iter().all(|j| u(&j["ios"]) > 0), "{w}: {jobs:?}");
    }
    // -b picks one.
    let (run, r) = bdev_json(
        &cfg,
        &[
            "-q", "4", "-o", "1M", "-w", "read", "-t", "0.2", "-b", "Null0",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r["jobs"][0]["bdev"], "Null0");
}

#[test]
fn text_output_has_progress_jobs_and_total() {
    let cfg = config("text", &[malloc("Malloc0", 4096, 512)]);
    let c = cfg.to_str().unwrap();
    let run = perf(&[
        "bdev", "-q", "8", "-o", "4k", "-w", "randread", "-t", "1", "-c", c, "-s", "64",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("[   1.0 s]"), "{out}");
    assert!(out.contains("Malloc0 @ core"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Total")), "{out}");
    for col in [
        "IOPS",
        "MiB/s",
        "avg_us",
        "p50_us",
        "p99_us",
        "p99.9_us",
        "max_us",
        "fails",
        "miscompares",
    ] {
        assert!(out.contains(col), "{col} missing: {out}");
    }
    assert!(out.contains("ns of busy time per I/O"), "{out}");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let cfg = config("bad", &[malloc("Malloc0", 64, 4096)]);
    let c = cfg.to_str().unwrap();
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-config.json");
    let broken = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ferrite-perf-broken-{}.json", std::process::id()));
    std::fs::write(&broken, "{\"subsystems\": [").unwrap();
    let unknown = config(
        "unknown",
        &[("bdev_frobnicate", serde_json::json!({"name": "x"}))],
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "subcommand"),
        (
            vec![
                "bdev", "-q", "8", "-o", "4k", "-w", "bogus", "-t", "1", "-c", c,
            ],
            "unknown workload 'bogus'",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4x", "-w", "read", "-t", "1", "-c", c,
            ],
            "unknown unit",
        ),
        (
            vec!["bdev", "-q", "8", "-o", "4k", "-w", "read", "-c", c],
            "--time",
        ),
        (
            vec![
                "bdev", "-q", "0", "-o", "4k", "-w", "read", "-t", "1", "-c", c,
            ],
            "queue depth",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "1000", "-w", "read", "-t", "1", "-c", c,
            ],
            "not a multiple of bdev Malloc0's block size 4096",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "512", "-w", "read", "-t", "1", "-c", c,
            ],
            "not a multiple",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4M", "-w", "read", "-t", "1", "-c", c,
            ],
            "out of range",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4k", "-w", "randrw", "-M", "101", "-t", "1", "-c", c,
            ],
            "above 100",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4k", "-w", "read", "-t", "0", "-c", c,
            ],
            "positive",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4k", "-w", "read", "-t", "1", "-m", "0x0", "-c", c,
            ],
            "selects no core",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4k", "-w", "read", "-t", "1", "-m", "zz", "-c", c,
            ],
            "not a hexadecimal",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "4k", "-w", "read", "-t", "1", "-c", c, "-b", "Nope",
            ],
            "bdev Nope does not exist",
        ),
        (
            vec![
                "bdev", "-q", "128", "-o", "4k", "-w", "verify", "-t", "1", "-c", c,
            ],
            "verify needs",
        ),
        (
            vec![
                "bdev", "-q", "8", "-o", "1M", "-w", "read", "-t", "1", "-c", c,
            ],
            "smaller than one",
        ),
        (
            vec![
                "bdev",
                "-q",
                "8",
                "-o",
                "4k",
                "-w",
                "read",
                "-t",
                "1",
                "-c",
                missing.to_str().unwrap(),
            ],
            "cannot read",
        ),
        (
            vec![
                "bdev",
                "-q",
                "8",
                "-o",
                "4k",
                "-w",
                "read",
                "-t",
                "1",
                "-c",
                broken.to_str().unwrap(),
            ],
            "not valid JSON",
        ),
        (
            vec![
                "bdev",
                "-q",
                "8",
                "-o",
                "4k",
                "-w",
                "read",
                "-t",
                "1",
                "-c",
                unknown.to_str().unwrap(),
            ],
            "bdev_frobnicate",
        ),
        (vec!["reactor", "--gap-ms", "0.1"], "--gap-ms"),
    ];
    for (args, want) in cases {
        let run = perf(&args);
        assert_eq!(
            run.code, 2,
            "{args:?}: stdout {} stderr {}",
            run.stdout, run.stderr
        );
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {:?}", run.stderr);
        assert!(
            lines[0].starts_with("ferrite-perf: "),
            "{args:?}: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(want),
            "{args:?}: wanted {want:?} in {}",
            lines[0]
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let _ = std::fs::remove_file(broken);
}

#[test]
fn reactor_wakeup_reports_both_modes() {
    let run = perf(&["reactor", "-t", "0.3", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let modes = r["modes"].as_array().unwrap();
    assert_eq!(modes[0]["mode"], "sleeping");
    assert_eq!(modes[1]["mode"], "poll-only");
    for m in modes {
        assert!(u(&m["samples"]) > 10, "{m}");
        assert!(m["p50_us"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["max_us"].as_f64().unwrap() >= m["p99_us"].as_f64().unwrap());
    }
    assert_eq!(u(&modes[1]["slept"]), 0, "a poll-only reactor never sleeps");
    assert!(u(&modes[0]["slept"]) > 10, "{}", modes[0]);
}

fn error_bdev_config(name: &str, injections: &[(&str, u32)]) -> PathBuf {
    let mut calls = vec![
        malloc("Malloc0", 8192, 512),
        (
            "bdev_error_create",
            serde_json::json!({"base_name": "Malloc0"}),
        ),
    ];
    for (io_type, num) in injections {
        calls.push((
            "bdev_error_inject_error",
            serde_json::json!({"name": "EE_Malloc0", "io_type": io_type, "error_type": "failure", "num": num}),
        ));
    }
    config(name, &calls)
}

#[test]
fn injected_errors_are_counted_exactly_and_exit_1() {
    // Malloc0 is claimed by the error bdev, so EE_Malloc0 is the only target.
    let cfg = error_bdev_config("error", &[("read", 5), ("write", 7)]);
    let (run, r) = bdev_json(
        &cfg,
        &[
            "-q", "16", "-o", "4k", "-w", "randrw", "-M", "50", "-t", "0.5",
        ],
    );
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["bdev"], "EE_Malloc0");
    assert_eq!(u(&r["total"]["fails"]), 12, "{}", r["total"]);
    assert!(
        u(&r["total"]["ios"]) > 1000,
        "the job went on after the failures"
    );
    assert_eq!(r["success"], false);
    assert!(
        run.stderr.lines().last().unwrap().contains("12 I/O failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn injected_errors_are_exact_across_reactors() {
    let cores = ferrite_reactor::available_cores();
    if !(cores.contains(&0) && cores.contains(&1)) {
        eprintln!("skipped: needs cores 0 and 1");
        return;
    }
    let cfg = error_bdev_config("error2", &[("read", 9)]);
    let (run, r) = bdev_json(
        &cfg,
        &[
            "-q", "8", "-o", "4k", "-w", "randread", "-t", "0.5", "-m", "0x3",
        ],
    );
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(u(&r["total"]["fails"]), 9, "{}", r["total"]);
}

#[test]
fn verify_over_an_error_bdev_counts_failed_writes_not_miscompares() {
    let cfg = error_bdev_config("error3", &[("write", 3), ("read", 2)]);
    let (run, r) = bdev_json(&cfg, &["-q", "8", "-o", "4k", "-w", "verify", "-t", "0.5"]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert_eq!(u(&r["total"]["fails"]), 5, "{}", r["total"]);
    assert_eq!(u(&r["total"]["miscompares"]), 0, "{}", r["total"]);
}

#[test]
fn without_injections_an_error_bdev_passes() {
    let cfg = error_bdev_config("error4", &[]);
    let (run, r) = bdev_json(&cfg, &["-q", "8", "-o", "4k", "-w", "verify", "-t", "0.3"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(r["jobs"][0]["bdev"], "EE_Malloc0");
    // The claimed base cannot be written to by name.
    let c = cfg.to_str().unwrap();
    let run = perf(&[
        "bdev", "-q", "8", "-o", "4k", "-w", "write", "-t", "0.3", "-c", c, "-b", "Malloc0",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("claimed by error"), "{}", run.stderr);
}

#[test]
fn prefill_writes_the_whole_bdev_first() {
    let cfg = config("prefill", &[malloc("Malloc0", 8192, 512)]);
    let (run, r) = bdev_json(
        &cfg,
        &[
            "-q",
            "16",
            "-o",
            "4k",
            "-w",
            "randread",
            "-t",
            "0.3",
            "--prefill",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Prefilled 4 MiB of 1 bdev"),
        "{}",
        run.stderr
    );
    let j = &r["jobs"][0];
    assert_eq!(
        u(&j["writes"]),
        0,
        "the prefill is not part of the results: {j}"
    );
    assert!(u(&j["reads"]) > 0);
}

#[test]
fn srp_refuses_bad_urls_sizes_and_workloads_with_usage_errors() {
    let url = "srp://127.0.0.1:5555/0002c90300a1b2c3/0002c90300d4e5f6/0";
    for (args, want) in [
        (
            vec!["-u", "srp://127.0.0.1/1/2/0", "-w", "randread", "-o", "4k"],
            "lacks a port",
        ),
        (
            vec!["-u", url, "-w", "verify", "-o", "4k"],
            "not supported over SRP",
        ),
        (
            vec![
                "-u",
                url,
                "-w",
                "read",
                "-o",
                "4k",
                "--initiator-id",
                "0x12",
            ],
            "not 32 hex digits",
        ),
        (vec!["-u", url, "-w", "read", "-o", "2m"], "up to 1048576"),
    ] {
        let mut all = vec!["srp", "-q", "1", "-t", "1"];
        all.extend_from_slice(&args);
        let run = perf(&all);
        assert_eq!(run.code, 2, "{all:?}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{all:?}: {}", run.stderr);
    }
}
