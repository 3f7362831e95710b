//! `cartprep identity …` and `cartprep profile …`: the supervision identity and Wi-Fi profiles.
//!
//! Exit status: 0 on success, 2 for bad input (a missing or malformed input file, an invalid
//! value, an identity that would be overwritten without `--force`), 1 for other failures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use profiles::{ProfileError, Secret, Security, SupervisionIdentity, WifiProfile, files};

/// Largest PEM/PKCS#12 input file read.
const MAX_INPUT_FILE: u64 = 1 << 20;

/// The state folder used when `--state` is not given: `$CARTPREP_STATE`, else
/// `~/Library/Application Support/cartprep` on macOS and `/var/lib/cartprep` elsewhere.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARTPREP_STATE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if cfg!(target_os = "macos")
        && let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty())
    {
        return PathBuf::from(home).join("Library/Application Support/cartprep");
    }
    PathBuf::from("/var/lib/cartprep")
}

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
    /// $CARTPREP_STATE, else /var/lib/cartprep, or ~/Library/Application Support/cartprep on
    /// macOS].
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
}

impl StateArg {
    fn dir(&self) -> PathBuf {
        self.state.clone().unwrap_or_else(default_state_dir)
    }
}

#[derive(Args)]
struct PasswordArgs {
    /// Read the PKCS#12 password from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Read the PKCS#12 password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
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
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Write a Wi-Fi configuration profile (.mobileconfig). Installing it again for the same
    /// SSID replaces the previous one.
    Wifi(WifiArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum SecurityArg {
    None,
    Wep,
    Wpa,
    Wpa2,
    Wpa3,
    Any,
}

impl From<SecurityArg> for Security {
    fn from(s: SecurityArg) -> Self {
        match s {
            SecurityArg::None => Security::None,
            SecurityArg::Wep => Security::Wep,
            SecurityArg::Wpa => Security::Wpa,
            SecurityArg::Wpa2 => Security::Wpa2,
            SecurityArg::Wpa3 => Security::Wpa3,
            SecurityArg::Any => Security::Any,
        }
    }
}

#[derive(Args)]
#[command(group(ArgGroup::new("secret").args(["password_file", "password_env", "password"])))]
struct WifiArgs {
    /// Network name (1 to 32 bytes).
    #[arg(long)]
    ssid: String,
    /// Network security.
    #[arg(long, value_enum, default_value = "wpa2")]
    security: SecurityArg,
    /// Read the Wi-Fi password from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Read the Wi-Fi password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// The Wi-Fi password itself. Other users can see it in `ps` and it stays in the shell
    /// history: prefer --password-file or --password-env.
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// The network does not broadcast its SSID.
    #[arg(long)]
    hidden: bool,
    /// Do not join the network automatically.
    #[arg(long)]
    no_auto_join: bool,
    /// Organisation shown with the profile on the iPad.
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
    /// Output file (mode 0600 when it holds a password).
    #[arg(long, value_name = "FILE.mobileconfig")]
    out: PathBuf,
}

/// A failure already described, with its exit status.
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn input(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            status: 2,
        }
    }
}

impl From<ProfileError> for Failure {
    fn from(e: ProfileError) -> Self {
        Failure {
            status: if e.is_input_error() { 2 } else { 1 },
            message: e.to_string(),
        }
    }
}

fn finish(result: Result<(), Failure>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(f) => {
            eprintln!("error: {}", f.message);
            Ok(ExitCode::from(f.status))
        }
    }
}

/// `cartprep identity …`
pub fn identity(args: IdentityArgs) -> anyhow::Result<ExitCode> {
    finish(match args.command {
        IdentityCommand::Create(a) => create(a),
        IdentityCommand::Import(a) => import(a),
        IdentityCommand::Export(a) => export(a),
        IdentityCommand::Show(a) => show(a),
    })
}

/// `cartprep profile …`
pub fn profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    finish(match args.command {
        ProfileCommand::Wifi(a) => wifi(a),
    })
}

/// Refuses to replace an identity without `--force`.
fn check_overwrite(dir: &Path, force: bool) -> Result<(), Failure> {
    if force || !SupervisionIdentity::exists_in(dir) {
        return Ok(());
    }
    let which = match SupervisionIdentity::load(dir) {
        Ok(id) => format!(" (sha256 {})", id.fingerprint_sha256()),
        Err(_) => String::new(),
    };
    Err(Failure::input(format!(
        "{} already holds a supervision identity{which}; iPads supervised with it can only be \
         managed with it. Pass --force to replace it (export it first: cartprep identity export \
         --p12 FILE)",
        dir.display()
    )))
}

fn create(args: CreateArgs) -> Result<(), Failure> {
    let dir = args.state.dir();
    check_overwrite(&dir, args.force)?;
    let id = SupervisionIdentity::create(&args.org)?;
    id.save(&dir)?;
    println!("created a supervision identity in {}", dir.display());
    print_identity(&id, &dir);
    Ok(())
}

fn import(args: ImportArgs) -> Result<(), Failure> {
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
        let password = read_password(&args.password)?.unwrap_or_else(|| Secret::new(""));
        SupervisionIdentity::from_pkcs12(&bytes, password.expose()).map_err(|e| e.in_file(path))?
    } else {
        return Err(Failure::input("give --cert and --key, --pem, or --p12"));
    };
    id.save(&dir)?;
    println!("imported a supervision identity into {}", dir.display());
    print_identity(&id, &dir);
    Ok(())
}

fn export(args: ExportArgs) -> Result<(), Failure> {
    let dir = args.state.dir();
    let id = load(&dir)?;
    if args.p12.is_none()
        && (args.password.password_file.is_some() || args.password.password_env.is_some())
    {
        return Err(Failure::input("a password is only used with --p12"));
    }
    if let Some(out) = &args.der {
        files::write_public(out, id.certificate_der())?;
        println!("wrote {} (certificate, DER)", out.display());
    }
    if let Some(out) = &args.pem {
        files::write_public(out, id.certificate_pem()?.as_bytes())?;
        println!("wrote {} (certificate, PEM)", out.display());
    }
    if let Some(out) = &args.p12 {
        let password = match read_password(&args.password)? {
            Some(p) => p,
            None => {
                eprintln!(
                    "warning: no --password-file or --password-env: the PKCS#12 file has an \
                     empty password"
                );
                Secret::new("")
            }
        };
        let name = id
            .common_name()
            .unwrap_or_else(|| "cartprep supervision identity".to_owned());
        files::write_private(out, &id.to_pkcs12(password.expose(), &name)?)?;
        println!(
            "wrote {} (certificate and key, PKCS#12, mode 0600)",
            out.display()
        );
    }
    if let Some(out) = &args.keybag {
        files::write_private(out, id.to_keybag_pem()?.as_bytes())?;
        println!(
            "wrote {} (key and certificate, PEM keybag, mode 0600)",
            out.display()
        );
    }
    Ok(())
}

fn show(args: ShowArgs) -> Result<(), Failure> {
    let dir = args.state.dir();
    let id = load(&dir)?;
    print_identity(&id, &dir);
    Ok(())
}

fn load(dir: &Path) -> Result<SupervisionIdentity, Failure> {
    if !SupervisionIdentity::exists_in(dir) {
        return Err(Failure {
            message: format!(
                "no supervision identity in {}: create one with `cartprep identity create --org \
                 NAME` or import one with `cartprep identity import`",
                dir.display()
            ),
            status: 1,
        });
    }
    Ok(SupervisionIdentity::load(dir)?)
}

/// Everything but the key.
fn print_identity(id: &SupervisionIdentity, dir: &Path) {
    let now = std::time::SystemTime::now();
    let status = if now < id.not_before() {
        "not yet valid"
    } else if now > id.not_after() {
        "EXPIRED"
    } else {
        "valid"
    };
    println!("state folder   {}", dir.display());
    println!(
        "organization   {}",
        id.organization().as_deref().unwrap_or("(none)")
    );
    println!("subject        {}", id.subject());
    let issuer = id.issuer();
    if issuer != id.subject() {
        println!("issuer         {issuer}");
    }
    println!("serial         {}", id.serial_hex());
    println!("valid from     {}", id.not_before_string());
    println!("valid until    {} ({status})", id.not_after_string());
    println!("sha256         {}", id.fingerprint_sha256());
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
}

/// The password from --password-file or --password-env, if either is given.
fn read_password(args: &PasswordArgs) -> Result<Option<Secret>, Failure> {
    if let Some(path) = &args.password_file {
        return password_from_file(path).map(Some);
    }
    if let Some(var) = &args.password_env {
        return password_from_env(var).map(Some);
    }
    Ok(None)
}

fn password_from_file(path: &Path) -> Result<Secret, Failure> {
    Ok(Secret::from_file(path)?)
}

fn password_from_env(var: &str) -> Result<Secret, Failure> {
    match std::env::var(var) {
        Ok(value) => Ok(Secret::new(value)),
        Err(std::env::VarError::NotPresent) => Err(Failure::input(format!(
            "environment variable {var} is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::input(format!(
            "environment variable {var} is not valid UTF-8"
        ))),
    }
}

fn wifi(args: WifiArgs) -> Result<(), Failure> {
    let password = if let Some(p) = &args.password {
        Some(Secret::new(p.as_str()))
    } else {
        read_password(&PasswordArgs {
            password_file: args.password_file.clone(),
            password_env: args.password_env.clone(),
        })?
    };
    let security: Security = args.security.into();
    if password.is_none() && security.requires_password() {
        return Err(Failure::input(format!(
            "a {security} network needs a password: give --password-file FILE or --password-env \
             VAR"
        )));
    }
    let profile = WifiProfile {
        ssid: args.ssid,
        security,
        password,
        hidden: args.hidden,
        auto_join: !args.no_auto_join,
        organization: args.org,
    };
    let bytes = profile.to_mobileconfig()?;
    if profile.password.is_some() {
        files::write_private(&args.out, &bytes)?;
    } else {
        files::write_public(&args.out, &bytes)?;
    }
    println!(
        "wrote {}: Wi-Fi {:?} ({}), identifier {}, UUID {}",
        args.out.display(),
        profile.ssid,
        profile.security,
        profile.identifier(),
        profile.uuid()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_password_file_is_bad_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = password_from_file(&dir.path().join("missing")).expect_err("missing file");
        assert_eq!(f.status, 2);
        assert!(f.message.contains("missing"), "{}", f.message);
    }

    #[test]
    fn state_dir_from_environment_or_default() {
        // Only reads the variable; the default is one of the documented folders.
        let dir = default_state_dir();
        match std::env::var_os("CARTPREP_STATE").filter(|d| !d.is_empty()) {
            Some(v) => assert_eq!(dir, PathBuf::from(v)),
            None if cfg!(target_os = "macos") => {
                assert!(dir.ends_with("Library/Application Support/cartprep"))
            }
            None => assert_eq!(dir, PathBuf::from("/var/lib/cartprep")),
        }
    }
}
