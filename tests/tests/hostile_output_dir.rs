//! An output directory someone else can reach: the release binary, running as root, writes
//! through no link planted under the names it will use, deletes none of the files it did not
//! write, and refuses a directory that others can write to. `report --each` needs no root.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Result, ensure};
use integration_tests::{
    assert_root, profiler_command, record_command, run, synthetic_recording, world_writable_tempdir,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A file that must come through untouched.
fn victim(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("victim");
    fs::write(&path, b"precious")?;
    Ok(path)
}

fn ensure_untouched(victim: &Path) -> Result<()> {
    ensure!(
        fs::read(victim)? == b"precious",
        "{} was written through a planted link",
        victim.display()
    );
    Ok(())
}

#[test]
fn report_each_writes_through_no_planted_link() -> Result<()> {
    let out = tempfile::tempdir()?;
    synthetic_recording(out.path())?;
    let elsewhere = tempfile::tempdir()?;
    let victim = victim(elsewhere.path())?;
    let mut planted = 0;
    for entry in fs::read_dir(out.path())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".pb.gz") {
            for ext in ["txt", "svg"] {
                symlink(&victim, out.path().join(format!("{stem}.{ext}")))?;
                planted += 1;
            }
        }
    }
    ensure!(planted > 0, "no profile to plant links beside");
    let mut cmd = profiler_command();
    cmd.arg("report").arg("--each").arg(out.path());
    run(cmd, TIMEOUT)?.ensure_success()?;
    ensure_untouched(&victim)
}

#[test]
#[ignore = "needs root: records"]
fn record_refuses_a_directory_others_can_write_to() -> Result<()> {
    assert_root();
    let out = world_writable_tempdir()?;
    let output = run(record_command(out.path(), &["--duration", "1"]), TIMEOUT)?;
    output.ensure_error(&["others can write to it", "chmod go-w"])?;
    // Sticky and root's, like /tmp: accepted.
    fs::set_permissions(out.path(), fs::Permissions::from_mode(0o1777))?;
    let output = run(record_command(out.path(), &["--duration", "1"]), TIMEOUT)?;
    output.ensure_success()
}

/// Links under every temporary name the recorder could use in the next minute, a user's
/// profile in a subdirectory, and a temporary file an earlier (killed) run left.
#[test]
#[ignore = "needs root: records"]
fn record_follows_no_link_and_deletes_only_its_own_files() -> Result<()> {
    assert_root();
    let out = tempfile::tempdir()?;
    let elsewhere = tempfile::tempdir()?;
    let victim = victim(elsewhere.path())?;
    let now = SystemTime::now();
    for second in 0..60 {
        let time = chrono::DateTime::<chrono::Utc>::from(now + Duration::from_secs(second));
        let stem = format!("cpu-{}", time.format("%Y%m%dT%H%M%SZ"));
        for suffix in ["", "-1", "-2"] {
            symlink(
                &victim,
                out.path().join(format!(".{stem}{suffix}.pb.gz.tmp")),
            )?;
        }
    }
    let project = out.path().join("myproject/pprof");
    fs::create_dir_all(&project)?;
    let theirs = project.join("important-heap.pb.gz");
    fs::write(&theirs, vec![0u8; 2 << 20])?;
    fs::File::options()
        .write(true)
        .open(&theirs)?
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))?;
    let leftover = out.path().join(".cpu-20200101T000000Z.pb.gz.a1B2c3.tmp");
    fs::write(&leftover, b"half a profile")?;

    let args = ["--interval", "1", "--duration", "3", "--max-disk-mb", "1"];
    run(record_command(out.path(), &args), TIMEOUT)?.ensure_success()?;

    ensure_untouched(&victim)?;
    ensure!(theirs.exists(), "retention deleted a user's profile");
    ensure!(
        !leftover.exists(),
        "the leftover temporary file is still there"
    );
    let written = fs::read_dir(out.path())?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("cpu-"))
        .count();
    ensure!(written > 0, "no interval file written");
    Ok(())
}
