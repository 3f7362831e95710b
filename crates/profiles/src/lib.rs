//! What cartprep puts on an iPad besides pairing: the supervision identity, the CMS signatures
//! that prove it, the cloud configuration that supervises the device, the Setup Assistant skip
//! keys, and Wi-Fi configuration profiles.
//!
//! - [`identity`]: [`SupervisionIdentity`] — create one as Apple Configurator does, import one
//!   (DER files as `cfgutil -C/-K` take, PEM, PKCS#12), export it (DER, PEM, PKCS#12,
//!   pymobiledevice3's keybag), store it in a state folder (key file mode 0600).
//! - [`cms`]: [`sign_attached`] — the CMS SignedData answering MCInstall's `Escalate` and
//!   supervised pairing's challenge (content attached, never canonicalised).
//! - [`cloud_config`]: [`CloudConfigBuilder`] — the `SetCloudConfiguration` dictionary.
//! - [`cms_check`]: a signed profile's signature checked with the signer it includes, in the
//!   algorithms MDM servers use.
//! - [`enrollment`]: the MDM enrollment request an iPad sends at the end of Setup Assistant
//!   (`MachineInfo`) and [`enrollment::judge_reply`], what the reply means.
//! - [`skip_keys`]: the `SkipSetup` catalogue and [`skip_keys::expand`].
//! - [`wifi`]: [`WifiProfile`] → `.mobileconfig`; [`load_mobileconfig`] for existing profiles
//!   (XML, binary or signed), installed unchanged.
//! - [`files`]: atomic writes, private files created 0600.
//!
//! Errors are [`ProfileError`]; [`ProfileError::is_input_error`] tells bad input (exit status 2
//! on the command line) from other failures. Secrets never appear in `Debug` output.
//!
//! References: `docs/protocol.md` §5 (§5.1 identity, §5.2 CMS, §5.3 cloud configuration, §5.4
//! Wi-Fi profile, §5.5 skip keys). Keys, certificates and signatures are built with the
//! RustCrypto `rsa`, `x509-cert` and `cms` crates, the generation the `idevice` crate uses.

mod ber;
pub mod cloud_config;
pub mod cms;
pub mod cms_check;
pub mod enrollment;
pub mod error;
pub mod files;
pub mod identity;
mod pkcs12;
pub mod rsa_signer;
pub mod skip_keys;
pub mod wifi;

pub use cloud_config::{CloudConfigBuilder, OrganizationDetails};
pub use cms::{SignedContent, sign_attached, signed_content, verify_attached};
pub use error::{ProfileError, Result};
pub use identity::SupervisionIdentity;
pub use skip_keys::{IosVersion, SkipKeysError, SkipSelection, UnknownKeys, expand};
pub use wifi::{
    ExistingProfile, ProfileFormat, Secret, Security, WifiProfile, load_mobileconfig,
    parse_mobileconfig,
};
