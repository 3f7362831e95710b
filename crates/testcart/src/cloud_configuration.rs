//! The cloud configuration both suites give a supervised iPad.

use plist::{Dictionary, Value};

/// A supervised cloud configuration naming `supervisor` (a DER certificate) as the
/// supervision host, for Springfield Elementary; pairing allowed. Tests add or change keys.
pub fn supervised_cloud_configuration(supervisor: &[u8]) -> Dictionary {
    let mut cc = Dictionary::new();
    cc.insert("AllowPairing".into(), true.into());
    cc.insert("IsSupervised".into(), true.into());
    cc.insert("OrganizationName".into(), "Springfield Elementary".into());
    cc.insert(
        "SupervisorHostCertificates".into(),
        Value::Array(vec![Value::Data(supervisor.to_vec())]),
    );
    cc
}
