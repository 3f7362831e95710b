//! The supervision identity through every way in and out: state folder, PKCS#12, keybag, PEM,
//! the DER files `cfgutil -C/-K` take, and files made by OpenSSL.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use profiles::identity::{CERTIFICATE_FILE, KEY_FILE};
use profiles::{ProfileError, SupervisionIdentity};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::pkcs8::der::pem::LineEnding;

/// Two identities shared by the tests (key generation is the slow part).
fn identities() -> &'static (SupervisionIdentity, SupervisionIdentity) {
    static IDS: OnceLock<(SupervisionIdentity, SupervisionIdentity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            SupervisionIdentity::create("Roundtrip School").expect("create a"),
            SupervisionIdentity::create("Other School").expect("create b"),
        )
    })
}

fn same(a: &SupervisionIdentity, b: &SupervisionIdentity) {
    assert_eq!(
        a.certificate_der(),
        b.certificate_der(),
        "certificate bytes"
    );
    assert_eq!(a.private_key(), b.private_key(), "private key");
}

#[test]
fn create_save_load() {
    let (id, _) = identities();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").join("nested");
    assert!(!SupervisionIdentity::exists_in(&state));
    id.save(&state).expect("save");
    assert!(SupervisionIdentity::exists_in(&state));
    let loaded = SupervisionIdentity::load(&state).expect("load");
    same(id, &loaded);
    assert_eq!(
        std::fs::read(state.join(CERTIFICATE_FILE)).expect("cert file"),
        id.certificate_der()
    );
    let key_text = std::fs::read_to_string(state.join(KEY_FILE)).expect("key file");
    assert!(
        key_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );
    assert_eq!(loaded.organization().as_deref(), Some("Roundtrip School"));
    assert_eq!(loaded.fingerprint_sha256(), id.fingerprint_sha256());
    assert_eq!(id.fingerprint_sha256().len(), 64);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600, "key file mode");
        assert_eq!(mode(&state), 0o700, "created state folder mode");
    }

    // Saving again replaces both files atomically, leaving nothing else behind.
    id.save(&state).expect("save again");
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![CERTIFICATE_FILE, KEY_FILE]);
}

#[test]
fn load_errors_name_the_file() {
    let (a, b) = identities();
    let dir = tempfile::tempdir().expect("tempdir");

    let e = SupervisionIdentity::load(dir.path()).expect_err("empty folder");
    assert!(e.to_string().contains(CERTIFICATE_FILE), "{e}");
    assert!(e.is_input_error());

    a.save(dir.path()).expect("save");
    std::fs::write(dir.path().join(KEY_FILE), "garbage").expect("corrupt key");
    let e = SupervisionIdentity::load(dir.path()).expect_err("corrupt key");
    assert!(e.to_string().contains(KEY_FILE), "{e}");

    // Certificate of one identity, key of another.
    a.save(dir.path()).expect("save");
    let key_b = b.private_key().to_pkcs8_pem(LineEnding::LF).expect("pem");
    std::fs::write(dir.path().join(KEY_FILE), key_b.as_bytes()).expect("swap key");
    let e = SupervisionIdentity::load(dir.path()).expect_err("mismatch");
    assert!(matches!(e, ProfileError::KeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains(KEY_FILE), "{e}");

    std::fs::write(dir.path().join(CERTIFICATE_FILE), b"not a certificate").expect("corrupt");
    let e = SupervisionIdentity::load(dir.path()).expect_err("corrupt cert");
    assert!(e.to_string().contains(CERTIFICATE_FILE), "{e}");
    assert!(e.to_string().contains("not a DER X.509 certificate"), "{e}");
}

#[test]
fn pkcs12_export_import() {
    let (id, _) = identities();
    let p12 = id
        .to_pkcs12("s3cret-ü", "Roundtrip School")
        .expect("export");
    let back = SupervisionIdentity::from_pkcs12(&p12, "s3cret-ü").expect("import");
    same(id, &back);

    let e = SupervisionIdentity::from_pkcs12(&p12, "wrong").expect_err("wrong password");
    assert!(matches!(e, ProfileError::Pkcs12WrongPassword { .. }), "{e}");

    let empty = id.to_pkcs12("", "x").expect("export, empty password");
    same(
        id,
        &SupervisionIdentity::from_pkcs12(&empty, "").expect("import"),
    );

    let e = SupervisionIdentity::from_pkcs12(b"definitely not pkcs12", "x").expect_err("junk");
    assert!(e.is_input_error(), "{e}");
}

#[test]
fn keybag_export_reads_back() {
    let (id, _) = identities();
    let keybag = id.to_keybag_pem().expect("keybag");
    let key_at = keybag
        .find("-----BEGIN RSA PRIVATE KEY-----")
        .expect("PKCS#1 key");
    let cert_at = keybag
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate");
    assert!(key_at < cert_at, "key first, as pymobiledevice3 writes it");
    same(
        id,
        &SupervisionIdentity::from_pem(keybag.as_bytes()).expect("from_pem"),
    );
}

#[test]
fn pem_in_two_files_any_order() {
    let (id, _) = identities();
    let cert = id.certificate_pem().expect("cert pem");
    let key1 = id
        .private_key()
        .to_pkcs1_pem(LineEnding::LF)
        .expect("pkcs1");
    let key8 = id
        .private_key()
        .to_pkcs8_pem(LineEnding::LF)
        .expect("pkcs8");
    for text in [
        format!("{cert}{}", &*key1),
        format!("{}{cert}", &*key8),
        format!("{}\n{cert}", &*key1),
    ] {
        same(
            id,
            &SupervisionIdentity::from_pem(text.as_bytes()).expect("from_pem"),
        );
    }
}

#[test]
fn der_files_with_pkcs1_and_pkcs8_keys() {
    let (id, other) = identities();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("supervision.der");
    std::fs::write(&cert, id.certificate_der()).expect("cert");
    let pkcs1 = dir.path().join("key-pkcs1.der");
    std::fs::write(
        &pkcs1,
        id.private_key().to_pkcs1_der().expect("pkcs1").as_bytes(),
    )
    .expect("write");
    let pkcs8 = dir.path().join("key-pkcs8.der");
    std::fs::write(
        &pkcs8,
        id.private_key().to_pkcs8_der().expect("pkcs8").as_bytes(),
    )
    .expect("write");
    same(
        id,
        &SupervisionIdentity::from_der_files(&cert, &pkcs1).expect("PKCS#1"),
    );
    same(
        id,
        &SupervisionIdentity::from_der_files(&cert, &pkcs8).expect("PKCS#8"),
    );

    // Mismatched key and certificate: rejected, naming both files.
    let foreign = dir.path().join("foreign.der");
    std::fs::write(
        &foreign,
        other
            .private_key()
            .to_pkcs8_der()
            .expect("pkcs8")
            .as_bytes(),
    )
    .expect("write");
    let e = SupervisionIdentity::from_der_files(&cert, &foreign).expect_err("mismatch");
    assert!(matches!(e, ProfileError::KeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("foreign.der"), "{e}");
    assert!(e.is_input_error());

    // Swapped arguments and missing files say which file is wrong.
    let e = SupervisionIdentity::from_der_files(&pkcs1, &cert).expect_err("swapped");
    assert!(
        e.to_string().contains("key-pkcs1.der") || e.to_string().contains("supervision.der"),
        "{e}"
    );
    let e = SupervisionIdentity::from_der_files(&dir.path().join("nope.der"), &pkcs1)
        .expect_err("missing");
    assert!(e.to_string().contains("nope.der"), "{e}");
}

/// The `openssl` command, or a failure saying to install it (CI installs it).
fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the `openssl` command is needed for this test ({e}): install it (Debian: apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn files_made_by_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "30",
            "-subj",
            "/CN=OpenSSL Made/O=Elsewhere",
        ],
        d,
    );
    openssl(
        &[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ],
        d,
    );
    openssl(
        &[
            "rsa",
            "-in",
            "key.pem",
            "-traditional",
            "-outform",
            "DER",
            "-out",
            "key1.der",
        ],
        d,
    );
    openssl(
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key8.der",
        ],
        d,
    );
    let a = SupervisionIdentity::from_der_files(&d.join("cert.der"), &d.join("key1.der"))
        .expect("PKCS#1 DER from openssl");
    let b = SupervisionIdentity::from_der_files(&d.join("cert.der"), &d.join("key8.der"))
        .expect("PKCS#8 DER from openssl");
    same(&a, &b);
    assert_eq!(
        a.certificate_der(),
        std::fs::read(d.join("cert.der")).expect("read")
    );
    assert_eq!(a.organization().as_deref(), Some("Elsewhere"));

    let pem = [
        std::fs::read(d.join("key.pem")).expect("key"),
        std::fs::read(d.join("cert.pem")).expect("cert"),
    ]
    .concat();
    same(
        &a,
        &SupervisionIdentity::from_pem(&pem).expect("PEM from openssl"),
    );

    // Legacy PKCS#12 (3DES/RC2, SHA-1 MAC), as macOS and `-legacy` write it: readable.
    openssl(
        &[
            "pkcs12",
            "-export",
            "-legacy",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-passout",
            "pass:pw",
            "-out",
            "legacy.p12",
        ],
        d,
    );
    let p12 = std::fs::read(d.join("legacy.p12")).expect("read");
    same(
        &a,
        &SupervisionIdentity::from_pkcs12(&p12, "pw").expect("legacy p12"),
    );
    let e = SupervisionIdentity::from_pkcs12(&p12, "nope").expect_err("wrong password");
    assert!(matches!(e, ProfileError::Pkcs12WrongPassword { .. }), "{e}");

    // OpenSSL 3's default (PBES2/AES, SHA-256 MAC): a typed error with the way out.
    openssl(
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-passout",
            "pass:pw",
            "-out",
            "modern.p12",
        ],
        d,
    );
    let p12 = std::fs::read(d.join("modern.p12")).expect("read");
    let e = SupervisionIdentity::from_pkcs12(&p12, "pw").expect_err("PBES2");
    assert!(matches!(e, ProfileError::Pkcs12Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("-legacy"), "{e}");
    // Same with a SHA-1 MAC, so the detection does not rely on the MAC alone.
    openssl(
        &[
            "pkcs12",
            "-export",
            "-macalg",
            "sha1",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-passout",
            "pass:pw",
            "-out",
            "aes-sha1mac.p12",
        ],
        d,
    );
    let p12 = std::fs::read(d.join("aes-sha1mac.p12")).expect("read");
    let e = SupervisionIdentity::from_pkcs12(&p12, "pw").expect_err("PBES2 with SHA-1 MAC");
    match &e {
        ProfileError::Pkcs12Unsupported { algorithm, .. } => {
            assert!(algorithm.contains("PBES2"), "{algorithm}")
        }
        other => panic!("expected Pkcs12Unsupported, got {other}"),
    }

    // Our PKCS#12 read by OpenSSL (legacy provider for RC2).
    let (ours, _) = identities();
    std::fs::write(
        d.join("ours.p12"),
        ours.to_pkcs12("pw", "ours").expect("export"),
    )
    .expect("write");
    let out = openssl(
        &[
            "pkcs12", "-legacy", "-in", "ours.p12", "-passin", "pass:pw", "-nodes", "-out",
            "ours.pem",
        ],
        d,
    );
    drop(out);
    let text = std::fs::read(d.join("ours.pem")).expect("read");
    same(
        ours,
        &SupervisionIdentity::from_pem(&text).expect("openssl's PEM of our p12"),
    );

    // An EC key is refused with a clear message.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ec.pem",
            "-out",
            "ec-cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=ec",
        ],
        d,
    );
    let pem = [
        std::fs::read(d.join("ec.pem")).expect("key"),
        std::fs::read(d.join("ec-cert.pem")).expect("cert"),
    ]
    .concat();
    let e = SupervisionIdentity::from_pem(&pem).expect_err("EC");
    assert!(e.to_string().contains("RSA"), "{e}");
}
