//! `cartprep identity …`: the supervision identity (create, import, export, show).
//!
//! Bad input (a missing or malformed input file, an invalid value, an identity that would be
//! overwritten without `--force`) is reported as such, so it exits with status 2.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use profiles::{Secret, SupervisionIdentity, files};
use station::paths::default_state_dir;

use super::bad_input;
use super::password::read_password;

/// Largest PEM/PKCS#12 input file read.
const MAX_INPUT_FILE: u64 = 1 << 20;

#[derive(Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Make a new supervision identity (RSA-2048, self-signed, as Apple Configurator makes it).
    Create(CreateArgs),
    /// Import an existing identity: DER certificate + key (as `cfgutil -C/-K` take), PEM
    /// files, or a PKCS#12 file.
    Import(ImportArgs),
    /// Write the identity out: certificate (DER or PEM), PKCS#12, or pymobiledevice3's keybag.
    Export(ExportArgs),
    /// Print the identity's organisation, subject, validity and SHA-256 fingerprint.
    Show(ShowArgs),
}

#[derive(Args)]
struct StateArg {
    /// State folder holding supervision.crt.der and supervision.key.pem [default:
    /// $CARTPREP_STATE, else /var/lib/cartprep, or /Library/Application Support/cartprep on
    /// macOS].
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
}

impl StateArg {
    fn dir(&self) -> PathBuf {
        self.state.clone().unwrap_or_else(default_state_dir)
    }
}

/// Where a PKCS#12 password comes from.
#[derive(Args)]
struct PasswordArgs {
    /// Read the PKCS#12 password from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Read the PKCS#12 password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
}

impl PasswordArgs {
    fn read(&self) -> anyhow::Result<Option<Secret>> {
        read_password(self.password_file.as_deref(), self.password_env.as_deref())
    }
}

#[derive(Args)]
struct CreateArgs {
    /// Organisation name, shown on the iPad as "supervised by …".
    #[arg(long, value_name = "NAME")]
    org: String,
    /// Replace an existing identity. Devices supervised with the old one can then no longer be
    /// managed from here.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["cert", "pem", "p12"])))]
struct ImportArgs {
    /// Certificate, DER (with --key).
    #[arg(long, value_name = "DER", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key, DER in PKCS#1 or PKCS#8 (with --cert).
    #[arg(long, value_name = "DER", requires = "cert")]
    key: Option<PathBuf>,
    /// PEM file(s) holding the certificate and the RSA key in any order (a pymobiledevice3
    /// keybag works).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pem: Vec<PathBuf>,
    /// PKCS#12 file (legacy 3DES/RC2 encryption, as macOS Keychain exports it).
    #[arg(long, value_name = "FILE")]
    p12: Option<PathBuf>,
    #[command(flatten)]
    password: PasswordArgs,
    /// Replace an existing identity.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args)]
#[command(group(ArgGroup::new("output").required(true).multiple(true).args(["der", "pem", "p12", "keybag"])))]
struct ExportArgs {
    /// Write the certificate, DER (for `cfgutil --host-cert`, MDM servers).
    #[arg(long, value_name = "OUT")]
    der: Option<PathBuf>,
    /// Write the certificate, PEM.
    #[arg(long, value_name = "OUT")]
    pem: Option<PathBuf>,
    /// Write certificate and key as PKCS#12 (mode 0600; OpenSSL 3 reads it with -legacy).
    #[arg(long, value_name = "OUT")]
    p12: Option<PathBuf>,
    /// Write pymobiledevice3's --keybag file: key then certificate, PEM (mode 0600).
    #[arg(long, value_name = "OUT")]
    keybag: Option<PathBuf>,
    #[command(flatten)]
    password: PasswordArgs,
    /// With --p12: write it without a password (the private key is then readable by whoever
    /// gets the file).
    #[arg(long, conflicts_with_all = ["password_file", "password_env"])]
    no_password: bool,
    /// Replace files that already exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    state: StateArg,
}

/// `cartprep identity …`
pub fn identity(args: IdentityArgs) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Create(a) => create(a),
        IdentityCommand::Import(a) => import(a),
        IdentityCommand::Export(a) => export(a),
        IdentityCommand::Show(a) => show(a),
    }
}

/// Refuses to replace an identity without `--force`.
fn check_overwrite(dir: &Path, force: bool) -> anyhow::Result<()> {
    if force || !SupervisionIdentity::exists_in(dir) {
        return Ok(());
    }
    let which = match SupervisionIdentity::load(dir) {
        Ok(id) => format!(" (sha256 {})", id.fingerprint_sha256()),
        Err(_) => String::new(),
    };
    Err(bad_input(format!(
        "{} already holds a supervision identity{which}; iPads supervised with it can only be \
         managed with it. Pass --force to replace it (export it first: cartprep identity export \
         --p12 FILE)",
        dir.display()
    )))
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let dir = args.state.dir();
    check_overwrite(&dir, args.force)?;
    let id = SupervisionIdentity::create(&args.org)?;
    id.save(&dir)?;
    writeln!(
        std::io::stdout(),
        "created a supervision identity in {}",
        dir.display()
    )?;
    print_identity(&id, &dir)
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let dir = args.state.dir();
    check_overwrite(&dir, args.force)?;
    let id = if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        SupervisionIdentity::from_der_files(cert, key)?
    } else if !args.pem.is_empty() {
        let mut text = Vec::new();
        for path in &args.pem {
            text.extend(files::read_limited(path, MAX_INPUT_FILE)?);
            text.push(b'\n');
        }
        let names = args
            .pem
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        SupervisionIdentity::from_pem(&text).map_err(|e| e.in_file(Path::new(&names)))?
    } else if let Some(path) = &args.p12 {
        let bytes = files::read_limited(path, MAX_INPUT_FILE)?;
        let password = args.password.read()?.unwrap_or_else(|| Secret::new(""));
        SupervisionIdentity::from_pkcs12(&bytes, password.expose()).map_err(|e| e.in_file(path))?
    } else {
        return Err(bad_input("give --cert and --key, --pem, or --p12"));
    };
    id.save(&dir)?;
    writeln!(
        std::io::stdout(),
        "imported a supervision identity into {}",
        dir.display()
    )?;
    print_identity(&id, &dir)
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let dir = args.state.dir();
    let id = load(&dir)?;
    let mut out = std::io::stdout();
    if args.p12.is_none()
        && (args.password.password_file.is_some()
            || args.password.password_env.is_some()
            || args.no_password)
    {
        return Err(bad_input("a password is only used with --p12"));
    }
    for path in [&args.der, &args.pem, &args.p12, &args.keybag]
        .into_iter()
        .flatten()
    {
        refuse_overwrite(path, args.force)?;
    }
    // Asked before anything is written, so a refusal leaves no file behind.
    let p12_password = match &args.p12 {
        Some(_) => Some(p12_password(&args.password, args.no_password)?),
        None => None,
    };
    if let Some(path) = &args.der {
        files::write_public(path, id.certificate_der())?;
        writeln!(out, "wrote {} (certificate, DER)", path.display())?;
    }
    if let Some(path) = &args.pem {
        files::write_public(path, id.certificate_pem()?.as_bytes())?;
        writeln!(out, "wrote {} (certificate, PEM)", path.display())?;
    }
    if let (Some(path), Some(password)) = (&args.p12, p12_password) {
        let name = id
            .common_name()
            .unwrap_or_else(|| "cartprep supervision identity".to_owned());
        files::write_private(path, &id.to_pkcs12(password.expose(), &name)?)?;
        writeln!(
            out,
            "wrote {} (certificate and key, PKCS#12, mode 0600)",
            path.display()
        )?;
    }
    if let Some(path) = &args.keybag {
        files::write_private(path, id.to_keybag_pem()?.as_bytes())?;
        writeln!(
            out,
            "wrote {} (key and certificate, PEM keybag, mode 0600)",
            path.display()
        )?;
    }
    Ok(())
}

/// Refuses to replace an existing file without `--force`.
pub fn refuse_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if !force && path.exists() {
        return Err(bad_input(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// The PKCS#12 export password: from --password-file/--password-env, else asked on the
/// terminal (twice); an empty one is refused unless --no-password says so, since the file
/// holds the private key.
fn p12_password(args: &PasswordArgs, no_password: bool) -> anyhow::Result<Secret> {
    if no_password {
        return Ok(Secret::new(""));
    }
    let password = match args.read()? {
        Some(p) => p,
        None => prompt_password()?,
    };
    check_p12_password(password)
}

fn check_p12_password(password: Secret) -> anyhow::Result<Secret> {
    if password.expose().is_empty() {
        return Err(bad_input(
            "the PKCS#12 password is empty: give one, or pass --no-password to write the \
             private key unprotected",
        ));
    }
    Ok(password)
}

/// Asks for the password on the terminal, twice; without a terminal there is nobody to ask.
fn prompt_password() -> anyhow::Result<Secret> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(bad_input(
            "no password for the PKCS#12 file: give --password-file or --password-env (or \
             --no-password)",
        ));
    }
    let first = Secret::new(rpassword::prompt_password("PKCS#12 password: ")?);
    let again = Secret::new(rpassword::prompt_password("again: ")?);
    if first.expose() != again.expose() {
        return Err(bad_input("the two passwords differ"));
    }
    Ok(first)
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let dir = args.state.dir();
    let id = load(&dir)?;
    print_identity(&id, &dir)
}

fn load(dir: &Path) -> anyhow::Result<SupervisionIdentity> {
    if !SupervisionIdentity::exists_in(dir) {
        anyhow::bail!(
            "no supervision identity in {}: create one with `cartprep identity create --org \
             NAME` or import one with `cartprep identity import`",
            dir.display()
        );
    }
    Ok(SupervisionIdentity::load(dir)?)
}

/// Everything but the key.
fn print_identity(id: &SupervisionIdentity, dir: &Path) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let now = std::time::SystemTime::now();
    let status = if now < id.not_before() {
        "not yet valid"
    } else if now > id.not_after() {
        "EXPIRED"
    } else {
        "valid"
    };
    writeln!(out, "state folder   {}", dir.display())?;
    writeln!(
        out,
        "organization   {}",
        id.organization().as_deref().unwrap_or("(none)")
    )?;
    writeln!(out, "subject        {}", id.subject())?;
    let issuer = id.issuer();
    if issuer != id.subject() {
        writeln!(out, "issuer         {issuer}")?;
    }
    writeln!(out, "serial         {}", id.serial_hex())?;
    writeln!(out, "valid from     {}", id.not_before_string())?;
    writeln!(out, "valid until    {} ({status})", id.not_after_string())?;
    writeln!(out, "sha256         {}", id.fingerprint_sha256())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join(profiles::identity::KEY_FILE);
        if let Ok(meta) = std::fs::metadata(&key) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: {} is readable by others (mode {mode:o}): chmod 600 it",
                    key.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pkcs12_password_is_refused_as_bad_input() {
        let refused = check_p12_password(Secret::new("")).expect_err("empty");
        assert!(refused.is::<super::super::BadInput>());
        assert!(refused.to_string().contains("--no-password"), "{refused}");
        assert!(check_p12_password(Secret::new("s3cret")).is_ok());
    }

    #[test]
    fn an_existing_file_is_replaced_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.der");
        assert!(refuse_overwrite(&path, false).is_ok(), "a new file");
        std::fs::write(&path, b"old").unwrap();
        let refused = refuse_overwrite(&path, false).expect_err("exists");
        assert!(refused.to_string().contains("--force"), "{refused}");
        assert!(refuse_overwrite(&path, true).is_ok());
    }
}
