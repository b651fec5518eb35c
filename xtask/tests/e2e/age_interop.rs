//! The age stream (`xtask::stream::crypt`) with the real `age` CLI (Debian's 1.1.1,
//! which provision.sh installs), which it runs as a pipeline stage: what we encrypt
//! opens with `age -d -i KEY` run by hand, what `age -r` encrypts opens with our reader,
//! keys come from `age-keygen` files, and a wrong key, a cut file and an altered byte
//! fail, each said in our terms. Without `age` these fail: an offsite object nobody
//! checked against the standard tool is a promise untested.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use xshell::Shell;
use xtask::stream::crypt::{CryptError, Decrypting, Encrypting, Identities, Recipients};

use crate::testbed::program;

/// A throwaway directory for one test's keys and files.
fn workdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("age_interop_{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A key made by `age-keygen`, as a person would make one; returns the file and its recipient.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let out = program("age-keygen").arg("-o").arg(&file).output().unwrap();
    assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let out = program("age-keygen").arg("-y").arg(&file).output().unwrap();
    assert!(out.status.success(), "age-keygen -y: {}", String::from_utf8_lossy(&out.stderr));
    (file, String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// Several chunks and a part, so the STREAM's chunking is exercised, not one block.
fn dump() -> Vec<u8> {
    (0..40_000).flat_map(|i| format!("INSERT INTO memories VALUES ({i}, 'body {i}');\n").into_bytes()).collect()
}

fn encrypt_ours(recipients: &Recipients, plain: &[u8], into: &Path) {
    let sh = Shell::new().unwrap();
    let mut writer = Encrypting::start(&sh, recipients, fs::File::create(into).unwrap()).unwrap();
    // Odd-sized writes, so age's 64 KiB chunks straddle them.
    for piece in plain.chunks(50_001) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap().sync_all().unwrap();
}

/// Our reader on `file`: an error at open, or one at the end of the stream, as text.
fn decrypt_ours(identity: &Path, file: &Path) -> Result<Vec<u8>, String> {
    let sh = Shell::new().unwrap();
    let identities = Identities::from_file(identity).map_err(|err| err.to_string())?;
    let mut reader =
        Decrypting::open(&sh, &identities, fs::File::open(file).unwrap()).map_err(|err| format!("open: {err}"))?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).map_err(|err| format!("read: {err}"))?;
    assert_eq!(reader.position(), plain.len() as u64);
    Ok(plain)
}

fn age_decrypt(identity: &Path, file: &Path) -> std::process::Output {
    program("age").arg("-d").arg("-i").arg(identity).arg(file).output().unwrap()
}

#[test]
fn what_we_encrypt_opens_with_age_dash_d_for_every_recipient() {
    let dir = workdir("ours");
    let (alice_key, alice) = keygen(&dir, "alice.key");
    let (bob_key, bob) = keygen(&dir, "bob.key");
    // Alice as a flag, Bob from a recipients file, as `age -R` reads one.
    let list = dir.join("recipients.txt");
    fs::write(&list, format!("# offsite readers\n\n{bob}\n")).unwrap();
    let mut recipients = Recipients::new();
    recipients.add(&alice, "--encrypt-to").unwrap();
    recipients.add_file(&list).unwrap();
    assert_eq!(recipients.len(), 2);
    let plain = dump();
    let stored = dir.join("backup.sql.age");
    encrypt_ours(&recipients, &plain, &stored);
    for key in [&alice_key, &bob_key] {
        let out = age_decrypt(key, &stored);
        assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == plain, "age -d gives back the dump");
    }
    // The CLI also reads our recipients file, so the two agree on its format.
    let by_cli = dir.join("by_cli.age");
    let out = program("age").arg("-R").arg(&list).arg("-o").arg(&by_cli).arg("/dev/null").output().unwrap();
    assert!(out.status.success(), "age -R: {}", String::from_utf8_lossy(&out.stderr));
    // And both refuse a key with spaces around it, so a file we take works by hand too.
    let indented = dir.join("indented.txt");
    fs::write(&indented, format!("  {bob}\n")).unwrap();
    let err = Recipients::new().add_file(&indented).unwrap_err().to_string();
    assert!(err.contains("line 1: spaces around it"), "{err}");
    let out = program("age").arg("-R").arg(&indented).arg("-o").arg(&by_cli).arg("/dev/null").output().unwrap();
    assert!(!out.status.success(), "age -R refuses it too");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn our_writer_and_reader_round_trip_around_the_chunk_size() {
    let dir = workdir("round");
    let (key, recipient) = keygen(&dir, "ops.key");
    let mut recipients = Recipients::new();
    recipients.add(&recipient, "--encrypt-to").unwrap();
    let big = dump();
    // Empty, under a chunk, exactly one (64 KiB) and several.
    for plain in [&[][..], &big[..1000], &big[..65_536], &big[..]] {
        let stored = dir.join("round.age");
        encrypt_ours(&recipients, plain, &stored);
        assert!(decrypt_ours(&key, &stored).unwrap() == plain, "{} bytes", plain.len());
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn what_age_dash_r_encrypts_opens_with_our_reader() {
    let dir = workdir("theirs");
    let (key, recipient) = keygen(&dir, "ops.key");
    let plain = dump();
    let source = dir.join("dump.sql");
    fs::write(&source, &plain).unwrap();
    let stored = dir.join("dump.sql.age");
    let out = program("age").arg("-r").arg(&recipient).arg("-o").arg(&stored).arg(&source).output().unwrap();
    assert!(out.status.success(), "age -r: {}", String::from_utf8_lossy(&out.stderr));
    assert!(decrypt_ours(&key, &stored).unwrap() == plain, "our reader gives back what age encrypted");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_identity_fails_before_any_plaintext_both_ways() {
    let dir = workdir("wrong");
    let (_, recipient) = keygen(&dir, "right.key");
    let (wrong_key, _) = keygen(&dir, "wrong.key");
    let mut recipients = Recipients::new();
    recipients.add(&recipient, "--encrypt-to").unwrap();
    let stored = dir.join("backup.sql.age");
    encrypt_ours(&recipients, &dump(), &stored);

    let identities = Identities::from_file(&wrong_key).unwrap();
    let sh = Shell::new().unwrap();
    let err = Decrypting::open(&sh, &identities, fs::File::open(&stored).unwrap()).err().unwrap();
    assert!(matches!(err, CryptError::WrongIdentity { .. }), "fails at open, before any plaintext: {err}");
    assert!(err.to_string().contains("wrong.key"), "{err}");
    // A plain dump where an encrypted one was expected: said so, at open.
    let plain = dir.join("plain.sql");
    fs::write(&plain, dump()).unwrap();
    let err = Decrypting::open(&sh, &identities, fs::File::open(&plain).unwrap()).err().unwrap();
    assert!(matches!(err, CryptError::NotAge), "{err}");
    assert!(!err.to_string().contains("INSERT"), "no line of the dump in the message: {err}");
    let out = age_decrypt(&wrong_key, &stored);
    assert!(!out.status.success() && out.stdout.is_empty(), "age -d with the wrong key writes nothing");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_or_altered_file_fails_with_our_reader_and_with_age() {
    let dir = workdir("damaged");
    let (key, recipient) = keygen(&dir, "ops.key");
    let stored = dir.join("dump.sql.age");
    let source = dir.join("dump.sql");
    fs::write(&source, dump()).unwrap();
    let out = program("age").arg("-r").arg(&recipient).arg("-o").arg(&stored).arg(&source).output().unwrap();
    assert!(out.status.success(), "age -r: {}", String::from_utf8_lossy(&out.stderr));
    let whole = fs::read(&stored).unwrap();

    // Cut inside a chunk, and exactly after a whole chunk (age then sees a clean end of
    // input without the last chunk's mark): both fail at the end of the stream, after
    // plaintext was returned, which is why a caller reads to the end before trusting it.
    let header = whole.len() - (dump().len() + 16 * dump().len().div_ceil(65_536)) - 16;
    for (cut_at, says) in [(whole.len() * 2 / 3, "cut short"), (header + 16 + 2 * (65_536 + 16), "truncated")] {
        let cut = dir.join("cut.age");
        fs::write(&cut, &whole[..cut_at]).unwrap();
        let err = decrypt_ours(&key, &cut).unwrap_err();
        assert!(err.starts_with("read: ") && err.contains(says), "cut at {cut_at}: {err}");
        assert!(!age_decrypt(&key, &cut).status.success(), "age -d refuses it too");
    }

    let altered = dir.join("altered.age");
    let mut bytes = whole.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&altered, &bytes).unwrap();
    let err = decrypt_ours(&key, &altered).unwrap_err();
    assert!(err.contains("altered"), "{err}");
    assert!(!age_decrypt(&key, &altered).status.success(), "age -d refuses it too");

    // A byte of the header's MAC: fails at open.
    let mut bytes = whole.clone();
    let mac = bytes.windows(4).position(|w| w == b"\n---").unwrap() + 8;
    // Another valid base64 character, so the header still parses and its MAC is what fails.
    bytes[mac] = if bytes[mac] == b'A' { b'B' } else { b'A' };
    fs::write(&altered, &bytes).unwrap();
    let err = decrypt_ours(&key, &altered).unwrap_err();
    assert!(err.starts_with("open: the age header was altered"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}
