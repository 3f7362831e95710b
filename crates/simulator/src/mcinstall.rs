//! com.apple.mobile.MCInstall on a virtual iPad: the read-only requests for now
//! (HelloHostIdentifier, Flush, GetProfileList, GetCloudConfiguration).

use plist::{Dictionary, Value};
use usbmux::plist_service;

use crate::faults::FaultAction;
use crate::lockdownd::{Link, MALFORMED};
use crate::tls::BoxStream;

fn acknowledged() -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Status".into(), "Acknowledged".into());
    d
}

/// A failure reply with one ErrorChain entry, as the device sends it.
pub fn failure(code: i64, domain: &str, description: &str) -> Dictionary {
    let mut entry = Dictionary::new();
    entry.insert("ErrorCode".into(), code.into());
    entry.insert("ErrorDomain".into(), domain.into());
    entry.insert("LocalizedDescription".into(), description.into());
    entry.insert("USEnglishDescription".into(), description.into());
    let mut d = Dictionary::new();
    d.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(entry)]),
    );
    d.insert("Status".into(), "Error".into());
    d
}

pub async fn serve(mut link: Link, mut stream: BoxStream) {
    use tokio::io::AsyncWriteExt;
    loop {
        let request = tokio::select! {
            _ = link.gone() => return,
            r = plist_service::read(&mut stream) => r,
        };
        let Ok(Some(request)) = request else { return };
        let kind = request
            .get("RequestType")
            .and_then(Value::as_string)
            .unwrap_or("")
            .to_owned();
        match link.fault(&kind) {
            Some(FaultAction::Drop) => return,
            Some(FaultAction::Malformed) => {
                let _ = stream.write_all(MALFORMED).await;
                continue;
            }
            Some(FaultAction::Delay { ms }) => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await
            }
            Some(FaultAction::Error { name }) => {
                let _ = plist_service::write(
                    &mut stream,
                    &failure(1, "MCInstallationErrorDomain", &name),
                )
                .await;
                continue;
            }
            None => {}
        }
        if !link.ipad.spec.latency.is_zero() {
            tokio::time::sleep(link.ipad.spec.latency).await;
        }
        let answer = match kind.as_str() {
            "HelloHostIdentifier" | "Flush" => acknowledged(),
            "GetProfileList" => {
                let mut d = acknowledged();
                d.insert("OrderedIdentifiers".into(), Value::Array(vec![]));
                d.insert(
                    "ProfileManifest".into(),
                    Value::Dictionary(Dictionary::new()),
                );
                d.insert(
                    "ProfileMetadata".into(),
                    Value::Dictionary(Dictionary::new()),
                );
                d
            }
            "GetCloudConfiguration" => {
                let mut d = acknowledged();
                let state = link.ipad.state();
                if state.setup_done {
                    let mut cc = Dictionary::new();
                    cc.insert("CloudConfigurationUIComplete".into(), true.into());
                    cc.insert("IsSupervised".into(), false.into());
                    d.insert("CloudConfiguration".into(), Value::Dictionary(cc));
                }
                d
            }
            _ => failure(
                1003,
                "MCInstallationErrorDomain",
                "The request is not recognized.",
            ),
        };
        if plist_service::write(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}
