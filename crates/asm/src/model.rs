//! The resources the client reads, as the Apple School Manager API documents them (JSON:API
//! shaped: `data`, `attributes`, `links`, `meta.paging`). Unknown fields are ignored: Apple
//! adds attributes without a new API version.

use serde::{Deserialize, Serialize};

/// An organization device (`orgDevices`); its `id` is the serial number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub attributes: DeviceAttributes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceAttributes {
    pub serial_number: Option<String>,
    pub device_model: Option<String>,
    pub product_family: Option<String>,
    pub product_type: Option<String>,
    /// `ASSIGNED` or `UNASSIGNED` (to a device management service).
    pub status: Option<String>,
    pub added_to_org_date_time: Option<String>,
    pub released_from_org_date_time: Option<String>,
}

/// A device management service (`mdmServers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    #[serde(default)]
    pub attributes: ServerAttributes,
}

impl Server {
    pub fn name(&self) -> &str {
        self.attributes.server_name.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerAttributes {
    pub server_name: Option<String>,
    /// `MDM`, `APPLE_CONFIGURATOR`, …
    pub server_type: Option<String>,
}

/// A device management service's ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerId(pub String);

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organization device activity (`orgDeviceActivities`), such as ASSIGN_DEVICES.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub id: String,
    #[serde(default)]
    pub attributes: ActivityAttributes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActivityAttributes {
    /// `IN_PROGRESS`, `COMPLETED`, `STOPPED` or `FAILED`.
    pub status: Option<String>,
    /// e.g. `SUBMITTED`, `COMPLETED_WITH_SUCCESS`, `COMPLETED_WITH_FAILURE`.
    pub sub_status: Option<String>,
    pub created_date_time: Option<String>,
    pub completed_date_time: Option<String>,
}

/// Where an activity stands, from its `status` and `subStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityState {
    InProgress,
    Succeeded,
    /// Completed with errors or failures, stopped, or failed: the sub-status says which.
    Failed {
        status: String,
        sub_status: String,
    },
}

impl Activity {
    /// Decides from the documented statuses. `COMPLETED` only counts as success with
    /// `COMPLETED_WITH_SUCCESS` (a completed activity may carry errors for some devices).
    pub fn state(&self) -> ActivityState {
        let status = self.attributes.status.as_deref().unwrap_or("");
        let sub = self.attributes.sub_status.as_deref().unwrap_or("");
        match (status, sub) {
            ("IN_PROGRESS", _) => ActivityState::InProgress,
            ("COMPLETED", "COMPLETED_WITH_SUCCESS") => ActivityState::Succeeded,
            _ => ActivityState::Failed {
                status: status.to_owned(),
                sub_status: sub.to_owned(),
            },
        }
    }
}

/// One page of a list.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub links: Links,
    #[serde(default)]
    pub meta: Meta,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Links {
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub paging: Paging,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Paging {
    pub next_cursor: Option<String>,
}

/// A single resource.
#[derive(Debug, Deserialize)]
pub(crate) struct One<T> {
    pub data: T,
}

/// A to-one relationship's linkage: `data` is `null` when there is none.
#[derive(Debug, Deserialize)]
pub(crate) struct Linkage {
    pub data: Option<Identifier>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Identifier {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(status: &str, sub: &str) -> Activity {
        Activity {
            id: "a".into(),
            attributes: ActivityAttributes {
                status: Some(status.into()),
                sub_status: Some(sub.into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn activity_states_follow_status_and_sub_status() {
        let rows = [
            ("IN_PROGRESS", "SUBMITTED", ActivityState::InProgress),
            ("IN_PROGRESS", "PROCESSING", ActivityState::InProgress),
            (
                "COMPLETED",
                "COMPLETED_WITH_SUCCESS",
                ActivityState::Succeeded,
            ),
        ];
        for (status, sub, want) in rows {
            assert_eq!(activity(status, sub).state(), want, "{status}/{sub}");
        }
        for (status, sub) in [
            ("COMPLETED", "COMPLETED_WITH_FAILURE"),
            ("COMPLETED", "COMPLETED_WITH_ERROR"),
            ("FAILED", "COMPLETED_WITH_FAILURE"),
            ("STOPPED", "STOPPING"),
        ] {
            assert!(
                matches!(activity(status, sub).state(), ActivityState::Failed { .. }),
                "{status}/{sub}"
            );
        }
    }

    #[test]
    fn a_device_page_reads_the_documented_shape() {
        let json = r#"{"data":[{"type":"orgDevices","id":"XABC123X0ABC123X0","attributes":{"serialNumber":"XABC123X0ABC123X0","status":"UNASSIGNED","imei":["1"]}}],"links":{"self":"x"},"meta":{"paging":{"limit":100,"nextCursor":"abc"}}}"#;
        let page: Page<Device> = serde_json::from_str(json).expect("page");
        assert_eq!(page.data[0].id, "XABC123X0ABC123X0");
        assert_eq!(
            page.data[0].attributes.status.as_deref(),
            Some("UNASSIGNED")
        );
        assert_eq!(page.meta.paging.next_cursor.as_deref(), Some("abc"));
    }
}
